"""`make bench`: load generators and side-by-side timings against reference tools, printed as ratios."""
