"""Mirrors: repositories whose snapshots come from a source repository. `net.py` is the guarded HTTP
client, `deb.py` reads a Debian archive's Release and Packages, `model.py` the mirrors' rows,
`run.py` the mirror task (verify, plan, download, snapshot, rebuild)."""
