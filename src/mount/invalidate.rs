//! From the server's change events to the core's invalidations: [`remote_changes`] reads one
//! tree event (cells-events.md §7.5) as [`crate::fs::RemoteChange`]s, and the sink the events
//! client calls hands them (and whether events flow) to the core.
//!
//! Invariants:
//! - A CREATE that carries a file's Etag counts as a content change too: the server merges a
//!   node's events until it has been quiet for a second, so it may carry a later save.
//! - A `temporary` or empty Etag is never taken for new content; an event without a path
//!   changes nothing.

/// Turns event frames into the core's invalidations.
pub(super) struct CoreEventSink {
    pub(super) fs: crate::fs::CellsFs,
}

impl crate::api::events::EventSink for CoreEventSink {
    fn tree_event(&self, event: &crate::api::events::TreeEvent) {
        for change in remote_changes(event) {
            self.fs.invalidate(change);
        }
    }

    fn connection_changed(&self, connected: bool) {
        // Events may have been missed while the socket was down (or before it came up);
        // while it is up, they invalidate precisely and the cache may be trusted longer.
        self.fs.set_events_live(connected);
    }

    fn workspaces_changed(&self) {
        self.fs.workspaces_changed();
    }
}

/// The core's view of one tree event (cells-events.md §7.5).
pub fn remote_changes(event: &crate::api::events::TreeEvent) -> Vec<crate::fs::RemoteChange> {
    use crate::api::events::ChangeKind;
    use crate::fs::RemoteChange;
    let source = event
        .source
        .as_ref()
        .map(|n| n.path.clone())
        .filter(|p| !p.is_empty());
    let target = event
        .target
        .as_ref()
        .map(|n| n.path.clone())
        .filter(|p| !p.is_empty());
    match (event.kind, source, target) {
        (ChangeKind::UpdatePath, Some(from), Some(to)) => vec![RemoteChange::Moved { from, to }],
        (ChangeKind::UpdatePath, None, Some(path)) => vec![RemoteChange::Created { path }],
        (ChangeKind::Create, _, Some(path)) => {
            // The server merges a node's events until it has been quiet for a second: a
            // CREATE may carry a later save of the file (someone else's, seconds after this
            // mount saw the first one), so its Etag counts as a content change too.
            let etag = event
                .target
                .as_ref()
                .filter(|n| n.kind == Some(crate::api::NodeKind::File))
                .map(|n| n.etag.clone())
                .filter(|e| !e.is_empty() && e != "temporary");
            let mut changes = vec![RemoteChange::Created { path: path.clone() }];
            if etag.is_some() {
                changes.push(RemoteChange::ContentChanged { path, etag });
            }
            changes
        }
        (ChangeKind::UpdatePath, Some(path), None) | (ChangeKind::Delete, Some(path), _) => {
            vec![RemoteChange::Deleted { path }]
        }
        (ChangeKind::UpdateContent, _, Some(path)) => {
            let etag = event
                .target
                .as_ref()
                .map(|n| n.etag.clone())
                .filter(|e| !e.is_empty() && e != "temporary");
            vec![RemoteChange::ContentChanged { path, etag }]
        }
        (ChangeKind::UpdateMeta | ChangeKind::UpdateUserMeta, _, Some(path)) => {
            vec![RemoteChange::MetaChanged { path }]
        }
        (_, Some(path), None) => vec![RemoteChange::Deleted { path }],
        _ => Vec::new(),
    }
}
