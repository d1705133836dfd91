"""Storage plumbing shared by the consent and audit stores."""
