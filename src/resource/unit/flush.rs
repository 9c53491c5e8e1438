//! The kind's batch step: the changed units' files written, one daemon-reload.

use super::contract::Staged;
use super::*;

/// The kind's batch step (see [`crate::resource::Flush`]): writes the members' files,
/// then one daemon-reload (live), then decides which member restarts each unit so
/// that it restarts once. A file that cannot be written fails its own unit; a failed
/// reload fails every member. Each member's result is what was done for it
/// ([`Flushed`]), which its diff reads right after.
pub fn flush(
    ctx: &ApplyCtx,
    items: &[(&dyn Resource, &Change)],
) -> Vec<Result<Staged, ResourceError>> {
    let mut results: Vec<Result<Option<Flushed>, ResourceError>> =
        items.iter().map(|_| Ok(None)).collect();
    let units: Vec<(usize, &Unit, &Change)> = items
        .iter()
        .enumerate()
        .filter_map(|(k, (r, c))| r.as_any().downcast_ref::<Unit>().map(|u| (k, u, *c)))
        .collect();
    let mut reload = false;
    for (k, u, c) in &units {
        match stage(ctx.host, u, c) {
            Ok((needs_reload, done)) => {
                reload |= needs_reload;
                results[*k] = Ok(Some(done));
            }
            Err(e) => results[*k] = Err(e),
        }
    }
    if reload && detect_mode(ctx.host) == Mode::Live {
        if let Err(e) = run_ok(systemctl(ctx.host, Mode::Live).arg("daemon-reload")) {
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(ResourceError::Failed(format!(
                    "systemd daemon-reload failed: {e}"
                )));
            }
        }
    }
    // Mains first, so a unit whose own resource changes restarts through it.
    let mut ordered: Vec<&(usize, &Unit, &Change)> = units
        .iter()
        .filter(|(_, u, _)| u.dropin.is_none())
        .collect();
    ordered.extend(units.iter().filter(|(_, u, _)| u.dropin.is_some()));
    let mut assigned: HashSet<&str> = HashSet::new();
    for (k, u, c) in ordered {
        let Ok(Some(done)) = &mut results[*k] else {
            continue;
        };
        let verb = ops_of(c).iter().find_map(|o| match o {
            Op::Restart { verb, .. } => Some(*verb),
            _ => None,
        });
        if let Some(verb) = verb.filter(|_| assigned.insert(u.unit.as_str())) {
            done.restart_due = Some(verb);
        }
    }
    results
        .into_iter()
        .map(|r| r.map(|done| done.map_or_else(Staged::nothing, Staged::new)))
        .collect()
}

/// One member's part of [`flush`]: its file's operations carried out (written, or its
/// perms fixed, or temp files of a killed run swept). Whether it
/// needs a reload, and what was done, for the diff right before its apply.
pub(super) fn stage(host: &Host, u: &Unit, c: &Change) -> Result<(bool, Flushed), ResourceError> {
    let ops = ops_of(c);
    let reload_due = ops.contains(&Op::DaemonReload);
    let writes = u.apply_file(host, ops)?;
    let file_ops = ops.iter().any(Op::is_file_op);
    let mut f = Flushed {
        // Enablement as planned, before the file is written (a new unit is
        // `not-found` until then, `disabled` after): the diff after the step shows it.
        planned_enabled: ops.iter().find_map(|o| match o {
            Op::Enable { from } | Op::Disable { from } => Some(from.clone()),
            _ => None,
        }),
        ..Flushed::default()
    };
    if file_ops {
        // The file's operations carry their diff, so apply shows it as the plan did;
        // the mask link is replaced by the file, so unmasking is done too.
        f.done = ops
            .iter()
            .filter(|o| o.is_file_op() || (**o == Op::Unmask && u.content.is_some()))
            .cloned()
            .collect();
        f.done_action = Some(c.action);
    }
    if reload_due {
        f.done.push(Op::DaemonReload);
    }
    Ok((writes || reload_due, f))
}
