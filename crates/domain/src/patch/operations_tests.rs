#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use super::super::{PatchDocument, PatchError};
use serde_json::{Value, json};

/// One operation parameter from (part name, part JSON without its name) pairs.
fn op(parts: &[(&str, Value)]) -> Value {
    let parts: Vec<Value> = parts
        .iter()
        .map(|(name, v)| {
            let mut p = v.as_object().cloned().unwrap_or_default();
            p.insert("name".into(), json!(name));
            Value::Object(p)
        })
        .collect();
    json!({"name": "operation", "part": parts})
}

fn ty(t: &str) -> (&'static str, Value) {
    ("type", json!({"valueCode": t}))
}

fn path(p: &str) -> (&'static str, Value) {
    ("path", json!({"valueString": p}))
}

fn patch(doc: &Value, ops: Vec<Value>) -> Result<Value, PatchError> {
    PatchDocument::FhirPath(json!({"resourceType": "Parameters", "parameter": ops})).apply(doc)
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "p1",
        "identifier": [{"system": "urn:a", "value": "1"}, {"system": "urn:b", "value": "2"}],
        "name": [{"use": "official", "family": "Zed", "given": ["Ann"]}],
        "birthDate": "1970-01-01"
    })
}

#[test]
fn add_sets_a_single_element_and_appends_to_a_list() {
    let mut p = patient();
    p.as_object_mut().unwrap().remove("birthDate");
    p.as_object_mut().unwrap().remove("identifier");
    let out = patch(
        &p,
        vec![
            op(&[
                ty("add"),
                path("Patient"),
                ("name", json!({"valueString": "birthDate"})),
                ("value", json!({"valueDate": "1980-02-03"})),
            ]),
            op(&[
                ty("add"),
                path("Patient"),
                ("name", json!({"valueString": "identifier"})),
                ("value", json!({"valueIdentifier": {"system": "urn:c", "value": "3"}})),
            ]),
            op(&[
                ty("add"),
                path("Patient.name.where(use = 'official')"),
                ("name", json!({"valueString": "given"})),
                ("value", json!({"valueString": "Bea"})),
            ]),
        ],
    )
    .unwrap();
    assert_eq!(out["birthDate"], "1980-02-03");
    assert_eq!(out["identifier"], json!([{"system": "urn:c", "value": "3"}]));
    assert_eq!(out["name"][0]["given"], json!(["Ann", "Bea"]));
    // A single element that exists is not overwritten by add.
    let again = patch(
        &out,
        vec![op(&[
            ty("add"),
            path("Patient"),
            ("name", json!({"valueString": "birthDate"})),
            ("value", json!({"valueDate": "1990-01-01"})),
        ])],
    );
    assert!(matches!(again, Err(PatchError::Failed(0, _))), "{again:?}");
}

#[test]
fn add_builds_an_element_from_parts_with_the_definitions_cardinality() {
    let out = patch(
        &patient(),
        vec![op(&[
            ty("add"),
            path("Patient"),
            ("name", json!({"valueString": "contact"})),
            (
                "value",
                json!({"part": [
                    {"name": "name", "valueHumanName": {"family": "Kin"}},
                    {"name": "telecom", "valueContactPoint": {"system": "phone", "value": "555"}},
                    {"name": "telecom", "valueContactPoint": {"system": "email", "value": "k@x"}},
                    {"name": "gender", "valueCode": "other"}
                ]}),
            ),
        ])],
    )
    .unwrap();
    assert_eq!(
        out["contact"],
        json!([{"name": {"family": "Kin"}, "telecom": [{"system": "phone", "value": "555"}, {"system": "email", "value": "k@x"}], "gender": "other"}])
    );
    let twice = patch(
        &patient(),
        vec![op(&[
            ty("add"),
            path("Patient"),
            ("name", json!({"valueString": "contact"})),
            (
                "value",
                json!({"part": [{"name": "gender", "valueCode": "other"}, {"name": "gender", "valueCode": "male"}]}),
            ),
        ])],
    );
    assert!(matches!(twice, Err(PatchError::Malformed(0, _))), "{twice:?}");
}

#[test]
fn insert_and_move_work_on_lists_by_index() {
    let out = patch(
        &patient(),
        vec![
            op(&[
                ty("insert"),
                path("Patient.identifier"),
                ("index", json!({"valueInteger": 0})),
                ("value", json!({"valueIdentifier": {"value": "0"}})),
            ]),
            op(&[
                ty("move"),
                path("Patient.identifier"),
                ("source", json!({"valueInteger": 0})),
                ("destination", json!({"valueInteger": 2})),
            ]),
        ],
    )
    .unwrap();
    let values: Vec<&str> = out["identifier"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["value"].as_str().unwrap())
        .collect();
    assert_eq!(values, ["1", "2", "0"]);
    for bad in [
        op(&[
            ty("insert"),
            path("Patient.identifier"),
            ("index", json!({"valueInteger": 3})),
            ("value", json!({"valueIdentifier": {"value": "0"}})),
        ]),
        op(&[
            ty("move"),
            path("Patient.identifier"),
            ("source", json!({"valueInteger": 0})),
            ("destination", json!({"valueInteger": 2})),
        ]),
        op(&[
            ty("insert"),
            path("Patient.birthDate"),
            ("index", json!({"valueInteger": 0})),
            ("value", json!({"valueDate": "2000"})),
        ]),
    ] {
        assert!(
            matches!(patch(&patient(), vec![bad.clone()]), Err(PatchError::Failed(0, _))),
            "{bad}"
        );
    }
}

#[test]
fn delete_removes_one_element_and_what_it_leaves_empty() {
    let out = patch(
        &patient(),
        vec![
            op(&[ty("delete"), path("Patient.birthDate")]),
            op(&[ty("delete"), path("Patient.deceased")]),
            op(&[ty("delete"), path("Patient.identifier.where(system = 'urn:a')")]),
            op(&[ty("delete"), path("Patient.name[0].given[0]")]),
        ],
    )
    .unwrap();
    assert_eq!(
        out,
        json!({"resourceType": "Patient", "id": "p1", "identifier": [{"system": "urn:b", "value": "2"}], "name": [{"use": "official", "family": "Zed"}]})
    );
    let gone = patch(
        &out,
        vec![
            op(&[ty("delete"), path("Patient.name.family")]),
            op(&[ty("delete"), path("Patient.name.use")]),
        ],
    )
    .unwrap();
    assert!(gone.get("name").is_none(), "{gone}");
    let many = patch(&patient(), vec![op(&[ty("delete"), path("Patient.identifier")])]);
    assert!(matches!(many, Err(PatchError::Failed(0, _))), "{many:?}");
}

#[test]
fn replace_changes_one_element_and_a_choice_may_change_type() {
    let out = patch(
        &patient(),
        vec![
            op(&[
                ty("replace"),
                path("Patient.birthDate"),
                ("value", json!({"valueDate": "1971-01-01"})),
            ]),
            op(&[
                ty("replace"),
                path("Patient.name.first().family"),
                ("value", json!({"valueString": "Yu"})),
            ]),
        ],
    )
    .unwrap();
    assert_eq!(
        (out["birthDate"].as_str(), out["name"][0]["family"].as_str()),
        (Some("1971-01-01"), Some("Yu"))
    );
    let missing = patch(
        &patient(),
        vec![op(&[
            ty("replace"),
            path("Patient.gender"),
            ("value", json!({"valueCode": "male"})),
        ])],
    );
    assert!(matches!(missing, Err(PatchError::Failed(0, _))), "{missing:?}");

    let obs =
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueQuantity": {"value": 5}});
    let out = patch(
        &obs,
        vec![op(&[
            ty("replace"),
            path("Observation.value"),
            ("value", json!({"valueString": "five"})),
        ])],
    )
    .unwrap();
    assert_eq!(
        (out.get("valueQuantity"), out["valueString"].as_str()),
        (None, Some("five"))
    );
    let added = patch(
        &out,
        vec![
            op(&[ty("delete"), path("Observation.value")]),
            op(&[
                ty("add"),
                path("Observation"),
                ("name", json!({"valueString": "value"})),
                ("value", json!({"valueBoolean": true})),
            ]),
        ],
    )
    .unwrap();
    assert_eq!((added.get("valueString"), &added["valueBoolean"]), (None, &json!(true)));
    // A choice element holds one type: adding another while one is there fails.
    let twice = patch(
        &added,
        vec![op(&[
            ty("add"),
            path("Observation"),
            ("name", json!({"valueString": "value"})),
            ("value", json!({"valueString": "x"})),
        ])],
    );
    assert!(matches!(twice, Err(PatchError::Failed(0, _))), "{twice:?}");
}

#[test]
fn malformed_operations_are_refused_with_their_position() {
    let good = op(&[ty("delete"), path("Patient.deceased")]);
    for (bad, at) in [
        (json!({"name": "op", "part": []}), 1),
        (op(&[ty("upsert"), path("Patient.birthDate")]), 1),
        (op(&[ty("delete")]), 1),
        (op(&[ty("delete"), path("Patient.name.descendants()")]), 1),
        (
            op(&[ty("delete"), path("Patient.birthDate"), path("Patient.gender")]),
            1,
        ),
        (
            op(&[
                ty("delete"),
                path("Patient.birthDate"),
                ("colour", json!({"valueString": "red"})),
            ]),
            1,
        ),
        (
            op(&[ty("add"), path("Patient"), ("value", json!({"valueDate": "2000"}))]),
            1,
        ),
        (
            op(&[
                ty("replace"),
                path("Patient.birthDate"),
                ("value", json!({"valuedate": "2000"})),
            ]),
            1,
        ),
        (
            op(&[
                ty("insert"),
                path("Patient.identifier"),
                ("value", json!({"valueIdentifier": {}})),
            ]),
            1,
        ),
    ] {
        let r = patch(&patient(), vec![good.clone(), bad.clone()]);
        assert_eq!(
            r.as_ref()
                .err()
                .map(|e| matches!(e, PatchError::Malformed(i, _) if *i == at)),
            Some(true),
            "{bad}: {r:?}"
        );
    }
    let not_parameters = PatchDocument::from_fhir_body(json!({"resourceType": "Patient"}));
    assert!(matches!(not_parameters, Err(PatchError::Malformed(0, _))));
}

#[test]
fn an_empty_patch_changes_nothing_and_moves_may_reach_the_end_of_the_list() {
    let empty = PatchDocument::FhirPath(json!({"resourceType": "Parameters"}));
    assert_eq!(empty.apply(&patient()), Ok(patient()));
    let out = patch(
        &patient(),
        vec![op(&[
            ty("move"),
            path("Patient.identifier"),
            ("source", json!({"valueInteger": 0})),
            ("destination", json!({"valueInteger": 1})),
        ])],
    )
    .unwrap();
    assert_eq!(
        (
            out["identifier"][0]["value"].as_str(),
            out["identifier"][1]["value"].as_str()
        ),
        (Some("2"), Some("1"))
    );
    let bad = PatchDocument::FhirPath(json!({"resourceType": "Parameters", "parameter": {"name": "operation"}}));
    assert!(matches!(bad.apply(&patient()), Err(PatchError::Malformed(0, _))));
}

#[test]
fn a_failing_operation_leaves_the_input_as_it_was() {
    let p = patient();
    let r = patch(
        &p,
        vec![
            op(&[ty("delete"), path("Patient.birthDate")]),
            op(&[
                ty("replace"),
                path("Patient.gender"),
                ("value", json!({"valueCode": "male"})),
            ]),
        ],
    );
    assert!(matches!(r, Err(PatchError::Failed(1, _))), "{r:?}");
    assert_eq!(p, patient());
}

/// Mutated patches (paths with characters swapped, parts dropped or retyped, indexes out of
/// range) answer Ok or an error, never a panic.
#[test]
fn mutated_patches_never_panic() {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let seeds = [
        op(&[
            ty("add"),
            path("Patient.name.where(use = 'official')"),
            ("name", json!({"valueString": "given"})),
            ("value", json!({"valueString": "B"})),
        ]),
        op(&[
            ty("insert"),
            path("Patient.identifier"),
            ("index", json!({"valueInteger": 1})),
            ("value", json!({"valueIdentifier": {"value": "0"}})),
        ]),
        op(&[
            ty("move"),
            path("Patient.identifier"),
            ("source", json!({"valueInteger": 0})),
            ("destination", json!({"valueInteger": 1})),
        ]),
        op(&[
            ty("replace"),
            path("Patient.name[0].family"),
            ("value", json!({"valueString": "Yu"})),
        ]),
        op(&[
            ty("delete"),
            path("Patient.identifier.where(system = 'urn:a' or value != '2').first()"),
        ]),
        op(&[
            ty("add"),
            path("Patient"),
            ("name", json!({"valueString": "contact"})),
            (
                "value",
                json!({"part": [{"name": "name", "valueHumanName": {"family": "K"}}]}),
            ),
        ]),
    ];
    let alphabet: Vec<char> = "Patient.namegiv()[]'=!$0123456789 whereoffirst,|`\\".chars().collect();
    let kinds = ["add", "insert", "delete", "replace", "move", "", "ADD"];
    let mut outcomes = [0usize; 2];
    for round in 0..3000 {
        let mut p = seeds[round % seeds.len()].clone();
        for _ in 0..1 + next(3) {
            let parts = p["part"].as_array_mut().unwrap();
            if parts.is_empty() {
                parts.push(json!({"name": "type", "valueCode": "delete"}));
            }
            let i = next(parts.len());
            match next(6) {
                0 => {
                    if let Some(s) = parts[i]["valueString"].as_str() {
                        let mut chars: Vec<char> = s.chars().collect();
                        if !chars.is_empty() {
                            let at = next(chars.len());
                            chars[at] = alphabet[next(alphabet.len())];
                        }
                        parts[i]["valueString"] = json!(chars.into_iter().collect::<String>());
                    }
                }
                1 => {
                    parts.remove(i);
                }
                2 => {
                    let n = [u64::MAX, 0, 7, 99][next(4)];
                    parts[i] = json!({"name": parts[i]["name"].clone(), "valueInteger": n});
                }
                3 => parts[i] = json!({"name": "type", "valueCode": kinds[next(kinds.len())]}),
                4 => parts[i] = json!({"name": parts[i]["name"].clone(), "part": [parts[i].clone()]}),
                _ => parts.push(parts[i].clone()),
            }
        }
        let r = patch(&patient(), vec![p]);
        outcomes[usize::from(r.is_ok())] += 1;
    }
    // Both kinds of answer occur: the mutations reach past the parser.
    assert!(outcomes[0] > 100 && outcomes[1] > 100, "{outcomes:?}");
}
