-- The union of posting lists, as a sorted array without duplicates (intarray's `|`, folded): the hosts a
-- fleet question matches in one range of host ids, counted with icount() without unnesting every list.
CREATE AGGREGATE posting_union(int4[]) (SFUNC = _int_union, STYPE = int4[], INITCOND = '{}');
