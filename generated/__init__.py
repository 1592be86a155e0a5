"""Generated from openapi.yaml by scripts/regen.sh: never edit by hand."""
