"""Generated code for the jisr.v1 contracts; do not edit."""
