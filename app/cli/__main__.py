"""`python -m app.cli`: how `depot run` starts its servers and workers."""
from app.cli import main

main()
