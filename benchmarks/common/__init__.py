"""Building blocks shared by several studies: players, runners, the image runner kit, report helpers, provenance."""
