"""The reports, from committed tables only: the verdicts (CLAIMS.md), the figures
and results/README.md."""
