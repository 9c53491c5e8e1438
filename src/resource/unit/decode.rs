//! Decoding a `unit` entry: names, content (`content:`, `template:`, `sections:`), lints.

use super::*;

// ---------------------------------------------------------------------------------
// Decoding

pub fn decode(
    d: &mut Decoder,
    name: (String, Span),
    meta: Meta,
    f: &mut Fields,
) -> Option<Box<dyn Resource>> {
    let (raw_name, name_span) = name;
    let dropin_field = f.string(d, "dropin");
    // `unit: a.service.d/x.conf` is the same as `unit: a.service` + `dropin: x.conf`.
    let (unit_name, dropin) = match (raw_name.split_once(".d/"), dropin_field) {
        (Some(_), Some((_, span))) => {
            d.error(
                &span,
                "dropin",
                "the name already names a drop-in (UNIT.d/NAME.conf); remove `dropin`",
            );
            return None;
        }
        (Some((u, c)), None) => (u.to_string(), Some((c.to_string(), name_span.clone()))),
        (None, dropin) => (raw_name.clone(), dropin),
    };
    let type_ok = check_unit_name(d, &unit_name, &name_span);
    if let Some((c, span)) = &dropin {
        check_dropin_name(d, c, span);
    }
    let unit_type = unit_name
        .rsplit_once('.')
        .map(|(_, t)| t.to_string())
        .unwrap_or_default();

    let content = decode_content(
        d,
        f,
        &unit_name,
        &unit_type,
        dropin.as_ref().map(|(c, _)| c.as_str()),
    );
    let enabled = f.bool(d, "enabled");
    let active = f.bool(d, "active");
    let masked = f.bool(d, "masked");
    let restart_on = f.id_list(d, "restart_on");
    let on_notify = match f.string(d, "on_notify") {
        None => OnNotify::Auto,
        Some((s, _)) if s == "restart" => OnNotify::Restart,
        Some((s, _)) if s == "reload" => OnNotify::Reload,
        Some((s, _)) if s == "auto" => OnNotify::Auto,
        Some((s, span)) => {
            d.error(
                &span,
                "on_notify",
                format!("`{s}` is not one of auto, restart, reload"),
            );
            OnNotify::Auto
        }
    };
    let max_exposure = match f.raw("max_exposure").map(|n| n.span.clone()) {
        None => None,
        Some(span) => f.f64(d, "max_exposure").and_then(|v| {
            if !(0.0..=10.0).contains(&v) {
                d.error(
                    &span,
                    "max_exposure",
                    format!("{v} is not an exposure score (0.0 best to 10.0 worst)"),
                );
                None
            } else {
                Some((v, span))
            }
        }),
    };

    let entry = f.span.clone();
    let is_template = unit_name.contains("@.");
    if dropin.is_some() {
        for (field, given) in [
            ("enabled", enabled.is_some()),
            ("active", active.is_some()),
            ("masked", masked.is_some()),
        ] {
            if given {
                d.error(&entry, field, format!("`{field}` belongs to the unit, not to a drop-in; declare it on unit[{unit_name}]"));
            }
        }
        if content.is_none() {
            d.error(
                &entry,
                "sections",
                "a drop-in needs its content: give one of `sections`, `content` or `template`",
            );
        }
    }
    if is_template {
        for (field, given) in [("enabled", enabled.is_some()), ("active", active.is_some())] {
            if given {
                d.error(&entry, field, format!("{unit_name} is a template; `{field}` applies to an instance (name@instance.{unit_type})"));
            }
        }
    }
    if masked == Some(true) {
        if content.is_some() && dropin.is_none() {
            d.error(&entry, "masked", "a masked unit is a link to /dev/null at the unit file's place: it cannot also have content");
        }
        if enabled == Some(true) || active == Some(true) {
            d.error(
                &entry,
                "masked",
                "a masked unit can be neither enabled nor active",
            );
        }
    }
    if unit_type == "target" && active.is_some() {
        d.warn(
            &entry,
            "active",
            "starting or stopping a target pulls in or stops everything it wants",
        );
    }
    if let Some((_, span)) = &max_exposure {
        if unit_type != "service" {
            d.error(
                span,
                "max_exposure",
                format!("only services have an exposure score; {unit_name} is a {unit_type}"),
            );
        }
    }
    if let Some(r) = &content {
        lint_content(
            d,
            r,
            &unit_name,
            &unit_type,
            dropin.is_some(),
            enabled,
            active,
            on_notify,
            &entry,
        );
    } else if on_notify == OnNotify::Reload && unit_type != "service" {
        d.error(
            &entry,
            "on_notify",
            format!("only services can be reloaded; {unit_name} is a {unit_type}"),
        );
    }
    if !type_ok {
        return None;
    }
    let path = match &dropin {
        Some((c, _)) => format!("{UNIT_DIR}/{unit_name}.d/{c}"),
        None => format!("{UNIT_DIR}/{unit_name}"),
    };
    let id_name = match &dropin {
        Some((c, _)) => format!("{unit_name}.d/{c}"),
        None => unit_name.clone(),
    };
    let file = content
        .as_ref()
        .map(|c| unit_file(&path, &c.text, &c.span, meta.secret, want_owner()));
    Some(Box::new(Unit {
        id: ResourceId::new("unit", id_name),
        meta,
        unit: unit_name,
        dropin: dropin.map(|(c, _)| c),
        file,
        path,
        content,
        enabled,
        active,
        masked,
        restart_on,
        on_notify,
        max_exposure,
    }))
}

pub(super) fn check_unit_name(d: &mut Decoder, name: &str, span: &Span) -> bool {
    let Some((stem, ty)) = name.rsplit_once('.') else {
        d.error(
            span,
            "unit",
            format!(
                "`{name}` needs its type suffix, one of: .{}",
                TYPES.join(", .")
            ),
        );
        return false;
    };
    if !TYPES.contains(&ty) {
        d.error(
            span,
            "unit",
            format!(
                "`.{ty}` units are not managed by reconcile; the type must be one of: .{}",
                TYPES.join(", .")
            ),
        );
        return false;
    }
    let valid = !stem.is_empty()
        && stem.len() + ty.len() < 256
        && !stem.starts_with('.')
        && stem
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":-_.\\@".contains(c));
    if !valid {
        d.error(
            span,
            "unit",
            format!("`{name}` is not a valid unit name (letters, digits and :-_.\\@ only)"),
        );
    }
    valid
}

pub(super) fn check_dropin_name(d: &mut Decoder, name: &str, span: &Span) {
    let ok = name.ends_with(".conf")
        && name.len() > 5
        && !name.starts_with('.')
        && !name.contains('/')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
    if !ok {
        d.error(
            span,
            "dropin",
            format!("`{name}` is not a drop-in file name: NAME.conf (letters, digits, -_.@)"),
        );
    }
}

pub(super) fn decode_content(
    d: &mut Decoder,
    f: &mut Fields,
    unit: &str,
    ty: &str,
    dropin: Option<&str>,
) -> Option<Rendered> {
    let shown_id = match dropin {
        Some(c) => format!("unit[{unit}.d/{c}]"),
        None => format!("unit[{unit}]"),
    };
    let sections_node = f.raw("sections");
    let content_span = f.raw("content").map(|n| n.span.clone());
    let content = f.string(d, "content");
    let template = f.string(d, "template");
    let given = [
        sections_node.is_some(),
        content_span.is_some(),
        template.is_some(),
    ]
    .iter()
    .filter(|&&b| b)
    .count();
    if given > 1 {
        d.error(
            &f.span,
            "sections",
            "give exactly one of `sections`, `content` and `template`",
        );
        return None;
    }
    let (text, origins, span): (Arc<str>, Vec<Option<Span>>, Span) =
        if let Some(node) = sections_node {
            let lines = render_sections(d, node, &shown_id, ty)?;
            let mut text = String::new();
            let mut origins = Vec::with_capacity(lines.len());
            for (line, origin) in lines {
                text.push_str(&line);
                text.push('\n');
                origins.push(origin);
            }
            (Arc::from(text), origins, node.span.clone())
        } else if let Some((text, span)) = content {
            (Arc::from(text), Vec::new(), span)
        } else if let Some((rel, span)) = template {
            let out = d.render_template(&rel, &span, "template")?;
            (out, Vec::new(), span)
        } else {
            return None;
        };
    let (entries, errors) = parse_unit_file(&text);
    for e in errors {
        let at = origins
            .get(e.line.saturating_sub(1))
            .cloned()
            .flatten()
            .unwrap_or_else(|| span.clone());
        d.error(
            &at,
            "content",
            format!("line {} of the unit: {}", e.line, e.message),
        );
    }
    Some(Rendered {
        text,
        origins,
        span,
        entries,
    })
}

/// `sections:` → lines of a unit file with the manifest place of each.
pub(super) fn render_sections(
    d: &mut Decoder,
    node: &Node,
    shown_id: &str,
    ty: &str,
) -> Option<Vec<(String, Option<Span>)>> {
    let Some(pairs) = node.as_map() else {
        d.error(
            &node.span,
            "sections",
            format!(
                "expected a mapping of sections (Unit, {}, Install), found {}",
                type_section(ty).unwrap_or("Install"),
                node.value.type_name()
            ),
        );
        return None;
    };
    let allowed: Vec<&str> = ["Unit"]
        .into_iter()
        .chain(type_section(ty))
        .chain(["Install"])
        .collect();
    let mut ok = true;
    let mut by_section: Vec<(usize, &Node, &Node)> = Vec::new();
    for (k, v) in pairs {
        let name = k.key_text();
        match SECTION_ORDER.iter().position(|s| *s == name) {
            Some(pos) if allowed.contains(&name.as_str()) => by_section.push((pos, k, v)),
            _ => {
                let hint =
                    if let Some(good) = allowed.iter().find(|a| a.eq_ignore_ascii_case(&name)) {
                        format!("; section names are case-sensitive: did you mean `{good}`?")
                    } else {
                        String::new()
                    };
                d.error(
                    &k.span,
                    "sections",
                    format!(
                        "section [{name}] does not belong in a {ty} unit; allowed: {}{hint}",
                        allowed.join(", ")
                    ),
                );
                ok = false;
            }
        }
    }
    by_section.sort_by_key(|(pos, _, _)| *pos);
    let mut lines: Vec<(String, Option<Span>)> = vec![(
        format!("# Managed by reconcile ({shown_id}); local edits are overwritten."),
        None,
    )];
    for (_, k, v) in by_section {
        let section = k.key_text();
        if lines.len() > 1 {
            lines.push((String::new(), None));
        }
        lines.push((format!("[{section}]"), Some(k.span.clone())));
        let Some(settings) = v.as_map() else {
            if v.value != Value::Null {
                d.error(
                    &v.span,
                    "sections",
                    format!(
                        "[{section}] must be a mapping of settings, found {}",
                        v.value.type_name()
                    ),
                );
                ok = false;
            }
            continue;
        };
        for (key_node, value) in settings {
            let key = key_node.key_text();
            let key_ok = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
                && key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !key_ok {
                d.error(
                    &key_node.span,
                    "sections",
                    format!("`{key}` is not a setting name"),
                );
                ok = false;
                continue;
            }
            if let Some(message) = crate::resource::systemd_keys::misspelt(&section, &key, &allowed)
            {
                d.error(&key_node.span, "sections", message);
                ok = false;
                continue;
            }
            let items: Vec<&Node> = match &value.value {
                Value::Seq(items) => items.iter().collect(),
                _ => vec![value],
            };
            for item in items {
                match scalar(d, item, &section, &key) {
                    Some(text) => lines.push((format!("{key}={text}"), Some(item.span.clone()))),
                    None => ok = false,
                }
            }
        }
    }
    ok.then_some(lines)
}

pub(super) fn type_section(ty: &str) -> Option<&'static str> {
    match ty {
        "service" => Some("Service"),
        "socket" => Some("Socket"),
        "timer" => Some("Timer"),
        "path" => Some("Path"),
        "mount" => Some("Mount"),
        _ => None,
    }
}

/// One value of a setting: strings templated, booleans as yes/no, null as the empty
/// assignment (which resets a list in systemd).
pub(super) fn scalar(d: &mut Decoder, node: &Node, section: &str, key: &str) -> Option<String> {
    let text = match &node.value {
        Value::Null => String::new(),
        Value::Bool(b) => if *b { "yes" } else { "no" }.to_string(),
        Value::Int(i) => i.to_string(),
        Value::Float(x) => x.to_string(),
        Value::Str(s) => match d.templates.render_inline(s, &node.span) {
            Ok(out) => out,
            Err(diag) => {
                d.diags.push(diag.field(key));
                return None;
            }
        },
        other => {
            d.error(
                &node.span,
                key,
                format!(
                    "[{section}] {key}: expected a value or a list of values, found {}",
                    other.type_name()
                ),
            );
            return None;
        }
    };
    if text.contains('\n') || text.contains('\r') {
        d.error(
            &node.span,
            key,
            format!(
                "[{section}] {key}: a value must be one line (a newline would start a new setting)"
            ),
        );
        return None;
    }
    if text.contains(" #") || text.contains("\t#") {
        d.warn(&node.span, key, format!("[{section}] {key}: systemd has no trailing comments; ` #...` becomes part of the value"));
    }
    Some(text)
}

#[allow(clippy::too_many_arguments)]
pub(super) fn lint_content(
    d: &mut Decoder,
    r: &Rendered,
    unit: &str,
    ty: &str,
    is_dropin: bool,
    enabled: Option<bool>,
    active: Option<bool>,
    on_notify: OnNotify,
    entry: &Span,
) {
    let e = &r.entries;
    if !is_dropin
        && enabled == Some(true)
        && !INSTALL_KEYS
            .iter()
            .any(|k| unit_value(e, "Install", k).is_some())
    {
        d.error(entry, "enabled", format!("{unit} has no [Install] section (WantedBy=, RequiredBy=, ...): it cannot be enabled; start it from another unit or add WantedBy="));
    }
    if ty == "service" && !is_dropin {
        let oneshot = unit_value(e, "Service", "Type") == Some("oneshot");
        let remain = unit_value(e, "Service", "RemainAfterExit").is_some_and(is_yes);
        if oneshot && !remain && active == Some(true) {
            d.error(entry, "active", format!("{unit} is a oneshot without RemainAfterExit=yes: it is never `active` once it finished, so `active: true` would run it on every apply; trigger it with a timer instead, or set RemainAfterExit=yes"));
        }
        if on_notify == OnNotify::Reload && unit_values(e, "Service", "ExecReload").is_empty() {
            d.error(entry, "on_notify", format!("{unit} has no ExecReload=: `systemctl reload` would always fail{}; use on_notify: restart or add ExecReload=", if oneshot { " (a oneshot cannot be reloaded)" } else { "" }));
        }
    } else if on_notify == OnNotify::Reload && ty != "service" {
        d.error(
            entry,
            "on_notify",
            format!("only services can be reloaded; {unit} is a {ty}"),
        );
    }
    if ty == "timer" {
        // Requires= on the triggered unit is lint R0001 (src/lint.rs).
        if !is_dropin
            && ![
                "OnCalendar",
                "OnActiveSec",
                "OnBootSec",
                "OnStartupSec",
                "OnUnitActiveSec",
                "OnUnitInactiveSec",
            ]
            .iter()
            .any(|k| unit_value(e, "Timer", k).is_some())
        {
            d.error(&r.span, "sections", format!("{unit} has no trigger (OnCalendar=, OnBootSec=, ...): systemd refuses to load it"));
        }
    }
    for entry in e.iter().filter(|x| x.section == "Install") {
        if ![
            "WantedBy",
            "RequiredBy",
            "UpheldBy",
            "Also",
            "Alias",
            "DefaultInstance",
        ]
        .contains(&entry.key.as_str())
        {
            let span = r
                .origins
                .get(entry.line.saturating_sub(1))
                .cloned()
                .flatten()
                .unwrap_or_else(|| r.span.clone());
            d.error(&span, "sections", format!("{}= is not an [Install] setting; systemd ignores it there (did it belong in another section?)", entry.key));
        }
    }
}

pub(super) fn is_yes(v: &str) -> bool {
    matches!(v, "yes" | "true" | "1" | "on")
}
