//! User-space paths as the server names nodes: `<workspace-slug>/<path in workspace>`, no
//! leading or trailing slash, the virtual root `""`. String helpers shared by the commands,
//! the transfer engine and the in-memory API, so none of them imports another for them.
//!
//! Invariant: pure string operations on `/`-separated paths; no I/O, no normalisation.

/// Parent of a user path (`""` for a workspace root).
pub fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map(|(p, _)| p).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_of_a_workspace_root_is_the_root() {
        assert_eq!(parent_of("ws/a/b"), "ws/a");
        assert_eq!(parent_of("ws"), "");
    }
}
