//! The fold of a service's ledger entries into its desired state.
//!
//! Pure: the same entries give the same state on every node. Entries are
//! taken in key order (`(hlc, origin)` within the subject), whatever order
//! they are handed in.
//!
//! - `Apply`: a new revision, numbered by its place among the service's
//!   `Apply` entries (from 1); it becomes current, with the replicas its
//!   spec asks for (`ServiceSpec::base_replicas`).
//! - `Scale`: the current revision's replicas (ignored once removed).
//! - `Rollback{to}`: revision `to` becomes current with its spec's replicas;
//!   ignored (and the history says so) if there is no such revision or the
//!   service is removed.
//! - `Remove`: nothing is current; a later `Apply` brings it back.

use weft_protocol::ledger::{Entry, EntryBody};
use weft_protocol::service::{ServiceChange, ServiceName, ServiceSpec};

use super::{HistoryItem, RevisionView, ServiceState};

/// The state of `name` from `entries` (others are skipped); `None` if it
/// has none.
pub fn fold(name: &ServiceName, entries: &[Entry]) -> Option<ServiceState> {
    let mut own: Vec<(Vec<u8>, &Entry)> = entries
        .iter()
        .filter(|e| matches!(&e.body, EntryBody::Service(s) if s.name == *name))
        .map(|e| (e.key(), e))
        .collect();
    if own.is_empty() {
        return None;
    }
    own.sort_by(|a, b| a.0.cmp(&b.0));
    let mut st = ServiceState {
        name: name.clone(),
        revisions: Vec::new(),
        current: None,
        replicas: 0,
        current_since_ms: 0,
        history: Vec::new(),
    };
    for (_, e) in own {
        let EntryBody::Service(ev) = &e.body else {
            continue;
        };
        let at = e.hlc.wall_ms;
        let mut item = HistoryItem {
            at_ms: at,
            origin: e.origin.clone(),
            change: String::new(),
            revision: None,
            replicas: None,
            reason: None,
        };
        match &ev.change {
            ServiceChange::Apply { spec } => {
                let number = u32::try_from(st.revisions.len() + 1).unwrap_or(u32::MAX);
                let parsed = parse(name, spec, number);
                st.replicas = parsed.as_ref().map_or(0, ServiceSpec::base_replicas);
                st.revisions.push(RevisionView {
                    number,
                    yaml: spec.clone(),
                    spec: parsed,
                    applied_ms: at,
                    origin: e.origin.clone(),
                });
                st.current = Some(number);
                st.current_since_ms = at;
                item.change = "apply".into();
                if st.revisions.last().is_some_and(|r| r.spec.is_none()) {
                    item.reason = Some("this node cannot read the spec".into());
                }
            }
            ServiceChange::Scale { replicas } => {
                item.change = "scale".into();
                if st.current.is_some() {
                    st.replicas = *replicas;
                } else {
                    item.reason = Some("ignored: the service is removed".into());
                }
                item.replicas = Some(*replicas);
                item.revision = st.current;
                st.history.push(item);
                continue;
            }
            ServiceChange::Rollback { to, reason } => {
                item.change = "rollback".into();
                item.reason = reason.clone();
                let base = st
                    .revision(*to)
                    .map(|r| r.spec.as_ref().map_or(0, ServiceSpec::base_replicas));
                match (base, st.current) {
                    (Some(base), Some(current)) => {
                        if current != *to {
                            st.current_since_ms = at;
                        }
                        st.current = Some(*to);
                        st.replicas = base;
                    }
                    (None, _) => {
                        item.reason = Some(ignored(
                            &format!("ignored: there is no revision {to}"),
                            reason,
                        ));
                    }
                    (Some(_), None) => {
                        item.reason = Some(ignored(
                            &format!("ignored: the service is removed (rollback to revision {to})"),
                            reason,
                        ));
                    }
                }
            }
            ServiceChange::Remove => {
                item.change = "remove".into();
                if st.current.is_some() {
                    st.current_since_ms = at;
                }
                st.current = None;
                st.replicas = 0;
            }
        }
        item.revision = st.current;
        item.replicas = st.current.map(|_| st.replicas);
        st.history.push(item);
    }
    Some(st)
}

fn ignored(why: &str, reason: &Option<String>) -> String {
    match reason {
        Some(r) => format!("{why}; {r}"),
        None => why.to_string(),
    }
}

/// A revision's spec as this node reads it: `None` if it does not parse
/// here or names another service.
fn parse(name: &ServiceName, yaml: &str, number: u32) -> Option<ServiceSpec> {
    match ServiceSpec::from_yaml(yaml) {
        Ok(s) if s.name == *name => Some(s),
        Ok(s) => {
            tracing::warn!(service = %name, revision = number, named = %s.name, "a revision's spec names another service; it is not run");
            None
        }
        Err(error) => {
            tracing::warn!(service = %name, revision = number, %error, "a revision's spec does not parse here; it is not run");
            None
        }
    }
}

/// The revision number `entry` (an `Apply` of its service) has among
/// `entries`, or `None` if it is not among them.
pub fn revision_of(entry: &Entry, entries: &[Entry]) -> Option<u32> {
    let EntryBody::Service(ev) = &entry.body else {
        return None;
    };
    let key = entry.key();
    let mut applies: Vec<Vec<u8>> = entries
        .iter()
        .filter(|e| {
            matches!(&e.body, EntryBody::Service(s)
                if s.name == ev.name && matches!(s.change, ServiceChange::Apply { .. }))
        })
        .map(Entry::key)
        .collect();
    applies.sort();
    applies.dedup();
    let at = applies.iter().position(|k| *k == key)?;
    u32::try_from(at + 1).ok()
}

/// The revision that was current before the current one: the last
/// different value `current` had, walking the history back.
pub fn previous_revision(st: &ServiceState) -> Option<u32> {
    let current = st.current?;
    st.history
        .iter()
        .rev()
        .filter_map(|h| h.revision)
        .find(|r| *r != current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use weft_protocol::Hlc;
    use weft_protocol::service::ServiceEvent;

    fn spec(name: &str, replicas: &str) -> String {
        format!(
            "apiVersion: weft/v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  replicas: {replicas}\n  task:\n    wasm: {{module: examples/httptest:v1}}\n"
        )
    }

    fn auto_spec(min: u32) -> String {
        format!(
            "apiVersion: weft/v1\nkind: Service\nmetadata: {{name: web}}\nspec:\n  replicas: auto\n  autoscale: {{min: {min}, max: 4, targetConcurrency: 2}}\n  task:\n    wasm: {{module: examples/httptest:v1}}\n"
        )
    }

    fn at(wall_ms: u64, counter: u32, origin: &str, change: ServiceChange) -> Entry {
        Entry {
            hlc: Hlc { wall_ms, counter },
            origin: origin.into(),
            body: EntryBody::Service(ServiceEvent {
                name: name(),
                change,
            }),
        }
    }

    fn name() -> ServiceName {
        "web".parse().expect("name")
    }

    fn apply(yaml: String) -> ServiceChange {
        ServiceChange::Apply { spec: yaml }
    }

    #[test]
    fn no_entries_no_service() {
        assert!(fold(&name(), &[]).is_none());
        let other = Entry {
            body: EntryBody::Service(ServiceEvent {
                name: "api".parse().expect("name"),
                change: ServiceChange::Remove,
            }),
            ..at(1, 0, "a", ServiceChange::Remove)
        };
        assert!(fold(&name(), &[other]).is_none());
    }

    #[test]
    fn revisions_are_numbered_by_clock_then_origin_across_writers() {
        // two writers, clocks interleaved, handed over in no particular order
        let entries = vec![
            at(30, 0, "b", apply(spec("web", "3"))),
            at(10, 0, "b", apply(spec("web", "1"))),
            at(20, 0, "a", apply(spec("web", "2"))),
            // same wall time as b's first: the counter, then the origin decide
            at(10, 0, "a", apply(spec("web", "4"))),
            at(10, 1, "a", apply(spec("web", "5"))),
        ];
        let st = fold(&name(), &entries).expect("state");
        let counts: Vec<(u32, u32, &str)> = st
            .revisions
            .iter()
            .map(|r| {
                (
                    r.number,
                    r.spec.as_ref().map_or(u32::MAX, ServiceSpec::base_replicas),
                    r.origin.as_str(),
                )
            })
            .collect();
        assert_eq!(
            counts,
            [
                (1, 4, "a"),
                (2, 1, "b"),
                (3, 5, "a"),
                (4, 2, "a"),
                (5, 3, "b")
            ]
        );
        assert_eq!(st.current, Some(5));
        assert_eq!(st.replicas, 3);
        assert_eq!(st.current_since_ms, 30);
        assert_eq!(st.history.len(), 5);
        assert!(st.history.iter().all(|h| h.change == "apply"));
        // the same number for an entry, wherever it is looked up
        for (i, e) in entries.iter().enumerate() {
            let n = revision_of(e, &entries).expect("found");
            let r = st.revision(n).expect("revision");
            assert_eq!(
                (r.applied_ms, r.origin.as_str()),
                (e.hlc.wall_ms, e.origin.as_str()),
                "{i}"
            );
        }
        let stranger = at(5, 0, "c", apply(spec("web", "1")));
        assert_eq!(revision_of(&stranger, &entries), None);
    }

    #[test]
    fn scale_holds_until_the_next_apply() {
        let st = fold(
            &name(),
            &[
                at(1, 0, "a", apply(spec("web", "2"))),
                at(2, 0, "a", ServiceChange::Scale { replicas: 5 }),
            ],
        )
        .expect("state");
        assert_eq!((st.current, st.replicas), (Some(1), 5));
        assert_eq!(st.current_since_ms, 1, "a scale starts no rollout");
        let h = st.history.last().expect("history");
        assert_eq!(
            (h.change.as_str(), h.revision, h.replicas),
            ("scale", Some(1), Some(5))
        );
        let st = fold(
            &name(),
            &[
                at(1, 0, "a", apply(spec("web", "2"))),
                at(2, 0, "a", ServiceChange::Scale { replicas: 5 }),
                at(3, 0, "b", apply(spec("web", "3"))),
            ],
        )
        .expect("state");
        assert_eq!(
            (st.current, st.replicas),
            (Some(2), 3),
            "apply resets the scale"
        );
        // an auto service starts at autoscale.min
        let st = fold(&name(), &[at(1, 0, "a", apply(auto_spec(2)))]).expect("state");
        assert_eq!(st.replicas, 2);
    }

    #[test]
    fn rollback_moves_current_and_resets_replicas() {
        let mut entries = vec![
            at(1, 0, "a", apply(spec("web", "2"))),
            at(2, 0, "a", apply(spec("web", "3"))),
            at(3, 0, "a", ServiceChange::Scale { replicas: 7 }),
            at(
                4,
                0,
                "b",
                ServiceChange::Rollback {
                    to: 1,
                    reason: Some("revision 2 not ready within 60s".into()),
                },
            ),
        ];
        let st = fold(&name(), &entries).expect("state");
        assert_eq!(
            (st.current, st.replicas, st.current_since_ms),
            (Some(1), 2, 4)
        );
        let h = st.history.last().expect("history");
        assert_eq!(h.change, "rollback");
        assert_eq!(h.revision, Some(1));
        assert_eq!(h.reason.as_deref(), Some("revision 2 not ready within 60s"));
        assert_eq!(previous_revision(&st), Some(2));
        // to a revision that does not exist: ignored, and the history says so
        entries.push(at(
            5,
            0,
            "a",
            ServiceChange::Rollback {
                to: 9,
                reason: None,
            },
        ));
        let st = fold(&name(), &entries).expect("state");
        assert_eq!(
            (st.current, st.replicas, st.current_since_ms),
            (Some(1), 2, 4)
        );
        let h = st.history.last().expect("history");
        assert_eq!(h.reason.as_deref(), Some("ignored: there is no revision 9"));
        assert_eq!(h.revision, Some(1));
        assert_eq!(st.history.len(), 5, "every entry is in the history");
        // the next apply is revision 3, whatever was asked before
        entries.push(at(6, 0, "a", apply(spec("web", "1"))));
        let st = fold(&name(), &entries).expect("state");
        assert_eq!(st.current, Some(3));
        assert_eq!(previous_revision(&st), Some(1));
    }

    #[test]
    fn remove_then_apply_brings_it_back() {
        let mut entries = vec![
            at(1, 0, "a", apply(spec("web", "2"))),
            at(2, 0, "a", ServiceChange::Remove),
        ];
        let st = fold(&name(), &entries).expect("state");
        assert_eq!((st.current, st.replicas, st.current_since_ms), (None, 0, 2));
        assert_eq!(st.revisions.len(), 1, "removed, its revisions stay");
        assert!(st.current_spec().is_none());
        // scale and rollback of a removed service change nothing
        entries.push(at(3, 0, "b", ServiceChange::Scale { replicas: 4 }));
        entries.push(at(
            4,
            0,
            "b",
            ServiceChange::Rollback {
                to: 1,
                reason: None,
            },
        ));
        let st = fold(&name(), &entries).expect("state");
        assert_eq!((st.current, st.replicas), (None, 0));
        assert!(
            st.history[3]
                .reason
                .as_deref()
                .is_some_and(|r| r.contains("removed")),
            "{:?}",
            st.history
        );
        entries.push(at(5, 0, "a", apply(spec("web", "2"))));
        let st = fold(&name(), &entries).expect("state");
        assert_eq!(
            (st.current, st.replicas, st.current_since_ms),
            (Some(2), 2, 5)
        );
        assert_eq!(
            st.history
                .iter()
                .map(|h| h.change.as_str())
                .collect::<Vec<_>>(),
            ["apply", "remove", "scale", "rollback", "apply"]
        );
    }

    #[test]
    fn an_unreadable_spec_is_a_revision_without_a_spec() {
        let entries = vec![
            at(1, 0, "a", apply(spec("web", "2"))),
            at(2, 0, "a", apply("kind: Service\nspec: [".into())),
            // a spec naming another service is not this one's to run
            at(3, 0, "a", apply(spec("api", "2"))),
        ];
        let st = fold(&name(), &entries).expect("state");
        assert_eq!(st.revisions.len(), 3);
        assert!(st.revisions[1].spec.is_none());
        assert!(st.revisions[2].spec.is_none());
        assert_eq!((st.current, st.replicas), (Some(3), 0));
        assert!(st.current_spec().is_none());
        assert!(st.history[1].reason.is_some());
        // rolling back to the readable one works
        let mut entries = entries;
        entries.push(at(
            4,
            0,
            "a",
            ServiceChange::Rollback {
                to: 1,
                reason: None,
            },
        ));
        let st = fold(&name(), &entries).expect("state");
        assert_eq!((st.current, st.replicas), (Some(1), 2));
        assert!(st.current_spec().is_some());
    }
}
