"""Click commands of the shared groups (chain, audit, demo, explain), one module per group."""
