-- The item count of each host's last stored installed and available report, beside its digest: a report
-- whose digest is the stored one is answered from here (its count is part of the reply) without being
-- checked or sent to PostgreSQL again, whichever server process took the stored one.
ALTER TABLE hosts ADD COLUMN installed_items int, ADD COLUMN available_items int;
