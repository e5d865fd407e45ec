//! docs/SEARCHABILITY.md must list every supported parameter with its class, exactly as the
//! code classes them. `CAREVAULT_BLESS=1` rewrites the generated part of the page.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::ResourceType;
use crate::search::{Class, class_of, params};

const BEGIN: &str = "<!-- generated: begin -->";
const END: &str = "<!-- generated: end -->";

fn class_text(c: Class) -> &'static str {
    match c {
        Class::Identifying => "identifying",
        Class::Clinical => "clinical",
    }
}

fn generated() -> String {
    let mut out = String::new();
    out.push_str("\n### Every resource type\n\n| parameter | type | class |\n|---|---|---|\n");
    for p in params::COMMON {
        out.push_str(&format!(
            "| `{}` | {} | {} |\n",
            p.name,
            p.kind.as_str(),
            class_text(Class::Clinical)
        ));
    }
    for t in ResourceType::ALL {
        let own = params::type_params(*t);
        if own.is_empty() {
            continue;
        }
        out.push_str(&format!("\n### {t}\n\n| parameter | type | class |\n|---|---|---|\n"));
        let mut sorted: Vec<_> = own.iter().collect();
        sorted.sort_by_key(|p| p.name);
        for p in sorted {
            out.push_str(&format!(
                "| `{}` | {} | {} |\n",
                p.name,
                p.kind.as_str(),
                class_text(class_of(*t, p))
            ));
        }
    }
    out.push('\n');
    out
}

#[test]
fn searchability_page_matches_the_code() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/SEARCHABILITY.md");
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
        "docs/SEARCHABILITY.md is out of date: run CAREVAULT_BLESS=1 cargo test -p carevault-domain searchability"
    );
    // Every common parameter is classed clinical in the code too.
    for t in ResourceType::ALL {
        for p in params::COMMON {
            assert_eq!(class_of(*t, p), Class::Clinical, "{t}.{}", p.name);
        }
    }
}
