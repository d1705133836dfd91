"""Citizens' consents: records and their revisions, stores, signed artefacts, the checker."""
