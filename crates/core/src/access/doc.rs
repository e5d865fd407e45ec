//! docs/ACCESS.md prints the role table exactly as `Role::perms` decides it.
//! `CAREVAULT_BLESS=1` rewrites the generated part of the page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::{Kind, Perms, Role};
use carevault_domain::ResourceType;

const BEGIN: &str = "<!-- generated: begin -->";
const END: &str = "<!-- generated: end -->";

fn letters(p: Perms) -> String {
    let s: String = [
        (Perms::CREATE, 'c'),
        (Perms::READ, 'r'),
        (Perms::UPDATE, 'u'),
        (Perms::DELETE, 'd'),
        (Perms::SEARCH, 's'),
    ]
    .iter()
    .filter(|(x, _)| p.contains(*x))
    .map(|(_, c)| *c)
    .collect();
    if s.is_empty() { "·".into() } else { s }
}

fn generated() -> String {
    let mut out = String::from("\n| type | kind |");
    for r in Role::ALL {
        out.push_str(&format!(" {r} |"));
    }
    out.push_str("\n|---|---|");
    for _ in Role::ALL {
        out.push_str("---|");
    }
    out.push('\n');
    for t in ResourceType::ALL {
        let kind = match Kind::of(*t) {
            Kind::Compartment => "compartment",
            Kind::Directory => "directory",
            Kind::Unscoped => "unscoped",
        };
        out.push_str(&format!("| {} | {kind} |", t.as_str()));
        for r in Role::ALL {
            out.push_str(&format!(" {} |", letters(r.perms(*t))));
        }
        out.push('\n');
    }
    out.push('\n');
    out
}

#[test]
fn access_page_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/ACCESS.md");
    let page = std::fs::read_to_string(&path).unwrap();
    let (head, rest) = page.split_once(BEGIN).expect("begin marker");
    let (current, tail) = rest.split_once(END).expect("end marker");
    let want = generated();
    if std::env::var("CAREVAULT_BLESS").is_ok() {
        std::fs::write(&path, format!("{head}{BEGIN}{want}{END}{tail}")).unwrap();
        return;
    }
    assert!(
        current == want,
        "docs/ACCESS.md is out of date: run CAREVAULT_BLESS=1 cargo test -p carevault-core access_page"
    );
}
