-- A deb mirror may also take the upstream's udebs (the debian-installer's packages, listed in
-- <component>/debian-installer/binary-<arch>/Packages), republished in the same place.
ALTER TABLE mirrors ADD COLUMN udebs boolean NOT NULL DEFAULT false;
