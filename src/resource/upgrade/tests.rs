//! Pure tests: window edges and DST, soak eligibility, guard decision tables, the diff.

use super::*;

fn tz(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The instant of a local wall-clock time in `zone` (compatible resolution).
fn at(zone: &str, civil: &str) -> Timestamp {
    let dt: DateTime = civil.parse().unwrap_or_else(|e| panic!("{civil}: {e}"));
    tz(zone)
        .to_ambiguous_timestamp(dt)
        .compatible()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn runbook_windows() -> Vec<Window> {
    vec![
        Window {
            days: vec![Weekday::Sunday],
            from: 120,
            to: 240,
            only_security: false,
        },
        Window {
            days: vec![Weekday::Sunday],
            from: 60,
            to: 180,
            only_security: true,
        },
    ]
}

fn inside(ws: &[Window], zone: &str, civil: &str) -> Option<bool> {
    match window_state(ws, &tz(zone), at(zone, civil)) {
        WindowState::Inside { security_only, .. } => Some(security_only),
        WindowState::Outside { .. } => None,
    }
}

#[test]
fn window_edges_are_exact_from_inclusive_to_exclusive() {
    let ws = runbook_windows();
    let z = "Europe/Berlin";
    // 2026-12-06 is a Sunday, 2026-12-07 a Monday.
    let cases = [
        ("2026-12-06T00:59:59", None),
        ("2026-12-06T01:00:00", Some(true)),
        ("2026-12-06T01:59:59", Some(true)),
        ("2026-12-06T02:00:00", Some(false)),
        ("2026-12-06T02:59:59", Some(false)),
        ("2026-12-06T03:00:00", Some(false)),
        ("2026-12-06T03:59:59", Some(false)),
        ("2026-12-06T04:00:00", None),
        ("2026-12-07T01:59:59", None),
        ("2026-12-07T02:00:00", None),
        ("2026-12-07T03:59:59", None),
        ("2026-12-07T04:00:00", None),
    ];
    for (t, want) in cases {
        assert_eq!(inside(&ws, z, t), want, "{t}");
    }
}

#[test]
fn outside_every_window_the_next_start_is_named() {
    let ws = runbook_windows();
    let zone = tz("Europe/Berlin");
    // Wednesday 2026-12-02 12:00: next is the emergency window, Sunday 01:00.
    match window_state(&ws, &zone, at("Europe/Berlin", "2026-12-02T12:00:00")) {
        WindowState::Outside { next: Some((t, i)) } => {
            assert_eq!(t, at("Europe/Berlin", "2026-12-06T01:00:00"));
            assert_eq!(i, 1);
        }
        other => panic!("{other:?}"),
    }
    // Sunday 04:00: the next ones are a week later.
    match window_state(&ws, &zone, at("Europe/Berlin", "2026-12-06T04:00:00")) {
        WindowState::Outside { next: Some((t, _)) } => {
            assert_eq!(t, at("Europe/Berlin", "2026-12-13T01:00:00"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_window_in_the_hour_skipped_by_spring_forward_is_reported_and_never_entered() {
    // Europe/Berlin: 2027-03-28 02:00 CET jumps to 03:00 CEST.
    let skipped = vec![Window {
        days: vec![Weekday::Sunday],
        from: 120,
        to: 180,
        only_security: false,
    }];
    let zone = tz("Europe/Berlin");
    let friday = at("Europe/Berlin", "2027-03-26T12:00:00");
    let notes = dst_notes(&skipped, &zone, friday);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("2027-03-28") && n.contains("wholly")),
        "{notes:?}"
    );
    // 01:59:59 CET and 03:00:00 CEST are one second apart: neither is inside.
    assert_eq!(
        inside(&skipped, "Europe/Berlin", "2027-03-28T01:59:59"),
        None
    );
    assert_eq!(
        inside(&skipped, "Europe/Berlin", "2027-03-28T03:00:00"),
        None
    );
    // The next occurrence is the week after, not the skipped one.
    match window_state(&skipped, &zone, friday) {
        WindowState::Outside { next: Some((t, _)) } => {
            assert_eq!(t, at("Europe/Berlin", "2027-04-04T02:00:00"))
        }
        other => panic!("{other:?}"),
    }
    // The runbook's 02:00-04:00 is an hour shorter that day, still entered at 03:00.
    let ws = runbook_windows();
    let notes = dst_notes(&ws[..1], &zone, friday);
    assert!(
        notes.iter().any(|n| n.contains("60 min shorter")),
        "{notes:?}"
    );
    assert_eq!(
        inside(&ws[..1], "Europe/Berlin", "2027-03-28T03:00:00"),
        Some(false)
    );
    // A week without a change has no notes.
    assert!(dst_notes(&ws, &zone, at("Europe/Berlin", "2026-12-02T12:00:00")).is_empty());
}

#[test]
fn fall_back_repeats_the_hour_and_both_passes_are_inside() {
    // America/New_York: 2026-11-01 02:00 EDT falls back to 01:00 EST.
    let ws = vec![Window {
        days: vec![Weekday::Sunday],
        from: 60,
        to: 120,
        only_security: false,
    }];
    let zone = tz("America/New_York");
    let first = "2026-11-01T05:30:00Z"
        .parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("{e}"));
    let second = "2026-11-01T06:30:00Z"
        .parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("{e}"));
    let after = "2026-11-01T07:00:00Z"
        .parse::<Timestamp>()
        .unwrap_or_else(|e| panic!("{e}"));
    for t in [first, second] {
        assert!(
            matches!(window_state(&ws, &zone, t), WindowState::Inside { .. }),
            "{t}"
        );
    }
    assert!(matches!(
        window_state(&ws, &zone, after),
        WindowState::Outside { .. }
    ));
    let notes = dst_notes(&ws, &zone, at("America/New_York", "2026-10-30T12:00:00"));
    assert!(
        notes.iter().any(|n| n.contains("60 min longer")),
        "{notes:?}"
    );
}

fn cand(name: &str, to: &str, security: bool) -> Candidate {
    Candidate {
        name: name.into(),
        from: "1.0".into(),
        to: to.into(),
        security,
        held: false,
    }
}

#[test]
fn a_version_is_eligible_once_seen_for_the_soak_time() {
    let now = at("UTC", "2026-12-06T02:30:00");
    let day = Duration::from_secs(86_400);
    let seen_at = |days: i64| {
        now.checked_sub(jiff::SignedDuration::from_hours(24 * days))
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let mut seen = BTreeMap::new();
    seen.insert("demo-a".to_string(), ("1.1".to_string(), seen_at(7)));
    seen.insert("demo-b".to_string(), ("1.1".to_string(), seen_at(6)));
    // Seen long ago, but at another version: the new one starts its soak now.
    seen.insert("demo-c".to_string(), ("1.1".to_string(), seen_at(30)));
    let soak = 7 * day;
    assert_eq!(
        soak_state(&cand("demo-a", "1.1", false), &seen, now, soak),
        (seen_at(7), true)
    );
    assert_eq!(
        soak_state(&cand("demo-b", "1.1", false), &seen, now, soak),
        (seen_at(6), false)
    );
    assert_eq!(
        soak_state(&cand("demo-c", "1.2", false), &seen, now, soak),
        (now, false)
    );
    // Never seen, no soak: eligible at once.
    assert_eq!(
        soak_state(&cand("demo-d", "2.0", false), &seen, now, Duration::ZERO),
        (now, true)
    );
}

#[test]
fn guards_fail_closed_outside_development() {
    use Effect::*;
    let cases = [
        (Outcome::Pass("ok".into()), [Pass, Pass, Pass]),
        (Outcome::Warn("85%".into()), [Warn, Warn, Warn]),
        (Outcome::Block("exit 1".into()), [Block, Block, Block]),
        (Outcome::Undecided("timed out".into()), [Warn, Block, Block]),
    ];
    for (o, want) in cases {
        let got = [Mode::Development, Mode::Staging, Mode::Production].map(|m| effect(&o, m));
        assert_eq!(got, want, "{o:?}");
    }
}

#[test]
fn disk_thresholds_warn_and_block_at_or_above() {
    assert!(matches!(disk_outcome(84, Some(85), 95), Outcome::Pass(_)));
    assert!(matches!(disk_outcome(85, Some(85), 95), Outcome::Warn(_)));
    assert!(matches!(disk_outcome(94, Some(85), 95), Outcome::Warn(_)));
    assert!(matches!(disk_outcome(95, Some(85), 95), Outcome::Block(_)));
    assert!(matches!(disk_outcome(100, None, 95), Outcome::Block(_)));
}

#[test]
fn durations_and_times_parse_or_refuse() {
    assert_eq!(parse_duration("7d"), Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(parse_duration("10s"), Some(Duration::from_secs(10)));
    assert_eq!(parse_duration("0"), Some(Duration::ZERO));
    assert_eq!(parse_duration("7 days"), None);
    assert_eq!(parse_duration("d"), None);
    assert_eq!(parse_hhmm("02:00"), Some(120));
    assert_eq!(parse_hhmm("24:00"), Some(1440));
    assert_eq!(parse_hhmm("24:01"), None);
    assert_eq!(parse_hhmm("2:00"), None);
    assert_eq!(parse_hhmm("02:60"), None);
}

fn spec(mode: Mode, soak_days: u64) -> Upgrade {
    Upgrade {
        id: ResourceId::new("upgrade", "system".to_string()),
        meta: Meta::default(),
        span: Span {
            file: "site.yaml".into(),
            line: 2,
            column: 5,
        },
        packages: Select::All,
        exclude: Vec::new(),
        timezone: tz("Europe/Berlin"),
        tz_name: "Europe/Berlin".into(),
        windows: runbook_windows(),
        soak: Duration::from_secs(soak_days * 86_400),
        guards: Vec::new(),
        mode,
        lock_timeout: DEFAULT_LOCK_TIMEOUT,
    }
}

fn observed(
    now: &str,
    candidates: Vec<Candidate>,
    seen_days_ago: i64,
    verdicts: Vec<Verdict>,
) -> Observed {
    let now = at("Europe/Berlin", now);
    let first = now
        .checked_sub(jiff::SignedDuration::from_hours(24 * seen_days_ago))
        .unwrap_or_else(|e| panic!("{e}"));
    Observed {
        now,
        seen: candidates
            .iter()
            .map(|c| (c.name.clone(), (c.to.clone(), first)))
            .collect(),
        candidates,
        missing: Vec::new(),
        verdicts,
        interrupted: Vec::new(),
        for_check: false,
    }
}

fn upgraded(d: &Diff<Op>) -> Vec<String> {
    d.ops
        .iter()
        .flat_map(|o| match o {
            Op::Upgrade { packages, .. } => packages.iter().map(|p| p.0.clone()).collect(),
            Op::RecordSeen { .. } => Vec::new(),
        })
        .collect()
}

#[test]
fn the_diff_upgrades_only_inside_a_window_with_guards_passing_and_soak_met() {
    let a = || cand("demo-a", "1.1", false);
    let s = || cand("libssl3", "3.0.17-1", true);
    let pass = || Verdict {
        guard: "command".into(),
        outcome: Outcome::Pass("exit code 0".into()),
    };
    let undecided = || Verdict {
        guard: "command".into(),
        outcome: Outcome::Undecided("timed out after 1s".into()),
    };
    let fail = || Verdict {
        guard: "disk".into(),
        outcome: Outcome::Block("96% used".into()),
    };
    type Case = (Mode, &'static str, i64, Vec<Verdict>, Vec<&'static str>);
    let cases: Vec<Case> = vec![
        // Outside (Wednesday): deferred, nothing.
        (
            Mode::Production,
            "2026-12-02T12:00:00",
            8,
            vec![pass()],
            vec![],
        ),
        // Primary window, soak met, guard passes: both.
        (
            Mode::Production,
            "2026-12-06T02:30:00",
            8,
            vec![pass()],
            vec!["demo-a", "libssl3"],
        ),
        // Emergency window only (01:30): security only.
        (
            Mode::Production,
            "2026-12-06T01:30:00",
            8,
            vec![pass()],
            vec!["libssl3"],
        ),
        // Soak not met.
        (
            Mode::Production,
            "2026-12-06T02:30:00",
            3,
            vec![pass()],
            vec![],
        ),
        // A blocking guard.
        (
            Mode::Development,
            "2026-12-06T02:30:00",
            8,
            vec![fail()],
            vec![],
        ),
        // A guard that cannot decide: blocks in production, warns in development.
        (
            Mode::Production,
            "2026-12-06T02:30:00",
            8,
            vec![undecided()],
            vec![],
        ),
        (
            Mode::Staging,
            "2026-12-06T02:30:00",
            8,
            vec![undecided()],
            vec![],
        ),
        (
            Mode::Development,
            "2026-12-06T02:30:00",
            8,
            vec![undecided()],
            vec!["demo-a", "libssl3"],
        ),
    ];
    for (mode, now, days, verdicts, want) in cases {
        let u = spec(mode, 7);
        let mut cs = vec![a(), s()];
        let held = Candidate {
            held: true,
            ..cand("demo-d", "1.1", false)
        };
        cs.push(held);
        let o = observed(now, cs, days, verdicts);
        let d = u
            .diff(&o, &DepView::none())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            upgraded(&d),
            want,
            "{mode:?} {now} soak {days}d: {:?} {:?}",
            d.notes,
            d.warnings
        );
        assert_eq!(d.action == Action::Update, !want.is_empty(), "{now}");
        let text = format!("{:?} {:?}", d.notes, d.warnings);
        assert!(text.contains("demo-d 1.0 → 1.1: held"), "{text}");
    }
}

#[test]
fn the_plan_says_deferred_with_the_next_window_and_shows_ages() {
    let u = spec(Mode::Production, 7);
    let o = observed(
        "2026-12-02T12:00:00",
        vec![cand("demo-a", "1.1", false)],
        2,
        vec![],
    );
    let d = u
        .diff(&o, &DepView::none())
        .unwrap_or_else(|e| panic!("{e}"));
    // In sync: everything the plan says is in its warnings (shown for in-sync ones).
    let notes = d.warnings.join("\n");
    assert!(d.notes.is_empty());
    assert!(
        notes.contains("deferred:")
            && notes.contains("next: Sun 2026-12-06 01:00 Europe/Berlin")
            && notes.contains("in 3 d 13 h"),
        "{notes}"
    );
    assert!(
        notes.contains("seen 2 d 0 h ago") && notes.contains("eligible 2026-12-07"),
        "{notes}"
    );
    assert_eq!(d.action, Action::None);
}

#[test]
fn a_newly_seen_version_is_recorded_and_an_upgraded_one_leaves_the_record() {
    let u = spec(Mode::Production, 0);
    let mut o = observed(
        "2026-12-06T02:30:00",
        vec![cand("demo-a", "1.1", false)],
        1,
        vec![],
    );
    o.seen.clear();
    let d = u
        .diff(&o, &DepView::none())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(upgraded(&d), vec!["demo-a"]);
    match d.ops.last() {
        Some(Op::RecordSeen { record, new }) => {
            assert!(record.is_empty());
            assert_eq!(new, &vec![("demo-a".to_string(), "1.1".to_string())]);
        }
        other => panic!("{other:?}"),
    }
    // The record round-trips.
    let mut r = BTreeMap::new();
    r.insert("demo-a".to_string(), ("1.1".to_string(), o.now));
    assert_eq!(parse_record(&render_record(&r)), r);
}

#[test]
fn security_versions_come_from_security_suites_in_the_policy() {
    let text = "libssl3:\n  Installed: 3.0.15-1~deb12u1\n  Candidate: 3.0.17-1~deb12u2\n  Version table:\n     3.0.17-1~deb12u2 500\n        500 http://deb.debian.org/debian-security bookworm-security/main amd64 Packages\n     3.0.16-1~deb12u1 500\n        500 http://deb.debian.org/debian bookworm/main amd64 Packages\n *** 3.0.15-1~deb12u1 100\n        100 /var/lib/dpkg/status\n";
    let p = crate::host::parse::apt::parse_policy(text);
    let l = p.get("libssl3").unwrap_or_else(|| panic!("{p:?}"));
    assert_eq!(l.security, vec!["3.0.17-1~deb12u2".to_string()]);
    assert_eq!(l.versions.len(), 3);
}

#[test]
fn for_check_pending_upgrades_and_first_sights_are_no_drift() {
    let u = spec(Mode::Production, 0);
    let mut o = observed(
        "2026-12-06T02:30:00",
        vec![cand("demo-a", "1.1", false)],
        1,
        vec![],
    );
    o.seen.clear();
    o.for_check = true;
    let d = u
        .diff(&o, &DepView::none())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(d.action, Action::None);
    assert!(d.ops.is_empty());
    assert!(
        d.warnings.iter().any(|w| w.contains("not drift")),
        "{:?}",
        d.warnings
    );
}
