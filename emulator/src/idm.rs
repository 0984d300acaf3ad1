//! Placeholder: users, workspaces and rights.
