//! A synthetic demo hospital, generated in code (no shared test data on a user's machine):
//! organizations, locations and practitioners, then patients with encounters, vital signs,
//! lab results, conditions, medications and allergies. Every name and number is invented.
//! Deterministic for a given seed, so a demo looks the same twice. `Shape::SCALE` makes the
//! long records of the scale benchmark (about 270 resources a patient, Synthea's size, with a
//! Claim and an ExplanationOfBenefit per encounter).

use serde_json::{Value, json};

/// SplitMix64: a small deterministic generator for demo content (not for anything secret).
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() as f64 / u64::MAX as f64)
    }
    fn uuid(&mut self) -> String {
        let a = self.next();
        let b = self.next();
        format!(
            "urn:uuid:{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            a >> 32,
            (a >> 16) & 0xffff,
            a & 0xfff,
            (b >> 48) & 0xfff,
            b & 0xffff_ffff_ffff
        )
    }
}

const GIVEN_F: &[&str] = &[
    "Amara", "Brigid", "Chiara", "Dalia", "Elif", "Freya", "Greta", "Hana", "Ines", "Jana",
];
const GIVEN_M: &[&str] = &[
    "Anton", "Bram", "Cyril", "Dario", "Emil", "Farid", "Gustav", "Hugo", "Ivo", "Jonas",
];
const FAMILY: &[&str] = &[
    "Altmann",
    "Brennan",
    "Castell",
    "Dorsey",
    "Ekwueme",
    "Falk",
    "Grieve",
    "Hollis",
    "Iwata",
    "Jessop",
    "Kowal",
    "Lindqvist",
    "Moreau",
    "Novak",
    "Okafor",
    "Petrov",
    "Quist",
    "Rainer",
    "Sato",
    "Thorne",
];
const STREETS: &[&str] = &[
    "Birch Lane",
    "Canal Street",
    "Harbour Road",
    "Mill Way",
    "Orchard Close",
    "Station Road",
];
const CITIES: &[&str] = &["Eastwick", "Northam", "Westford", "Southby"];

/// (code, display) of SNOMED conditions used in the demo.
const CONDITIONS: &[(&str, &str)] = &[
    ("44054006", "Diabetes mellitus type 2"),
    ("38341003", "Hypertensive disorder"),
    ("195967001", "Asthma"),
    ("13645005", "Chronic obstructive lung disease"),
    ("35489007", "Depressive disorder"),
    ("399211009", "History of myocardial infarction"),
];
/// (RxNorm code, display)
const MEDICATIONS: &[(&str, &str)] = &[
    ("860975", "Metformin 500 MG Oral Tablet"),
    ("314076", "Lisinopril 10 MG Oral Tablet"),
    ("745679", "Albuterol 0.09 MG/ACTUAT Inhaler"),
    ("312938", "Sertraline 50 MG Oral Tablet"),
    ("197361", "Amlodipine 5 MG Oral Tablet"),
];
/// (SNOMED substance, display)
const ALLERGIES: &[(&str, &str)] = &[
    ("91936005", "Penicillin"),
    ("227493005", "Cashew nuts"),
    ("300916003", "Latex"),
];
/// (LOINC, display, unit, low, high)
const LABS: &[(&str, &str, &str, f64, f64)] = &[
    ("2339-0", "Glucose [Mass/volume] in Blood", "mg/dL", 70.0, 180.0),
    ("718-7", "Hemoglobin [Mass/volume] in Blood", "g/dL", 10.5, 17.0),
    (
        "2160-0",
        "Creatinine [Mass/volume] in Serum or Plasma",
        "mg/dL",
        0.6,
        1.6,
    ),
    ("4548-4", "Hemoglobin A1c/Hemoglobin.total in Blood", "%", 4.8, 9.5),
];

pub const NPI: &str = "http://hl7.org/fhir/sid/us-npi";
pub const MRN: &str = "urn:oid:1.2.36.146.595.217.0.1";
const ORG_ID: &str = "urn:ietf:rfc:3986";

fn coding(system: &str, code: &str, display: &str) -> Value {
    json!({"coding": [{"system": system, "code": code, "display": display}], "text": display})
}

fn post(full_url: &str, resource: Value) -> Value {
    let rtype = resource["resourceType"].as_str().unwrap_or("Basic").to_owned();
    json!({"fullUrl": full_url, "resource": resource, "request": {"method": "POST", "url": rtype}})
}

fn post_once(full_url: &str, resource: Value, condition: &str) -> Value {
    let mut e = post(full_url, resource);
    e["request"]["ifNoneExist"] = json!(condition);
    e
}

/// The reference data: organizations, locations, practitioners, roles.
pub fn reference_bundle(seed: u64) -> Value {
    let mut g = Gen(seed);
    let mut entries = Vec::new();
    let hospitals = [
        ("St. Aldhelm General Hospital", "org-1"),
        ("Riverside Community Clinic", "org-2"),
        ("Northam Diagnostics Laboratory", "org-3"),
    ];
    let mut org_urls = Vec::new();
    for (name, code) in hospitals {
        let url = g.uuid();
        let ident = format!("{ORG_ID}|{code}");
        entries.push(post_once(
            &url,
            json!({"resourceType": "Organization", "active": true, "name": name,
                   "identifier": [{"system": ORG_ID, "value": code}],
                   "type": [coding("http://terminology.hl7.org/CodeSystem/organization-type", "prov", "Healthcare Provider")]}),
            &format!("identifier={ident}"),
        ));
        org_urls.push(url);
    }
    for (i, (name, kind)) in [
        ("Emergency Department", "ER"),
        ("Ward 3 - Internal Medicine", "HU"),
        ("Outpatient Clinic A", "OF"),
        ("Laboratory", "HLAB"),
    ]
    .iter()
    .enumerate()
    {
        let url = g.uuid();
        entries.push(post_once(
            &url,
            json!({"resourceType": "Location", "status": "active", "name": name,
                   "identifier": [{"system": "urn:carevault:demo:location", "value": format!("loc-{}", i + 1)}],
                   "type": [coding("http://terminology.hl7.org/CodeSystem/v3-RoleCode", kind, name)],
                   "managingOrganization": {"reference": org_urls[0]}}),
            &format!("identifier=urn:carevault:demo:location|loc-{}", i + 1),
        ));
    }
    for i in 0..8u64 {
        let url = g.uuid();
        let female = g.below(2) == 0;
        let given = if female { g.pick(GIVEN_F) } else { g.pick(GIVEN_M) };
        let family = g.pick(FAMILY);
        let npi = format!("99990{:05}", 100 + i);
        entries.push(post_once(
            &url,
            json!({"resourceType": "Practitioner", "active": true,
                   "identifier": [{"system": NPI, "value": npi}],
                   "name": [{"family": family, "given": [given], "prefix": ["Dr."]}],
                   "gender": if female { "female" } else { "male" }}),
            &format!("identifier={NPI}|{npi}"),
        ));
        let role_url = g.uuid();
        let specialty = [
            "General practice",
            "Internal medicine",
            "Emergency medicine",
            "Pathology",
        ][(i % 4) as usize];
        entries.push(post(
            &role_url,
            json!({"resourceType": "PractitionerRole", "active": true,
                   "practitioner": {"reference": url},
                   "organization": {"reference": org_urls[(i % 2) as usize]},
                   "specialty": [{"text": specialty}]}),
        ));
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn practitioner_ref(i: u64) -> Value {
    json!({"reference": format!("Practitioner?identifier={NPI}|99990{:05}", 100 + (i % 8))})
}

fn date(year: i64, month: u64, day: u64) -> String {
    format!("{year:04}-{month:02}-{day:02}")
}

/// Where and when an observation was made.
struct Context<'a> {
    patient: &'a str,
    encounter: &'a str,
    when: &'a str,
}

fn quantity_obs(at: &Context<'_>, code: &str, display: &str, value: f64, unit: &str, category: &str) -> Value {
    let Context {
        patient,
        encounter: enc,
        when,
    } = *at;
    json!({"resourceType": "Observation", "status": "final",
           "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", category, category)],
           "code": coding("http://loinc.org", code, display),
           "subject": {"reference": patient}, "encounter": {"reference": enc},
           "effectiveDateTime": when, "issued": when,
           "valueQuantity": {"value": (value * 10.0).round() / 10.0, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit}})
}

/// One patient's record as a transaction bundle.
/// How long a generated record is.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Encounters per patient: `min` plus up to `extra` more.
    pub min_encounters: u64,
    pub extra_encounters: u64,
    /// A Claim and an ExplanationOfBenefit for every encounter.
    pub claims: bool,
}

impl Shape {
    /// The demo: a few visits each.
    pub const DEMO: Shape = Shape {
        min_encounters: 2,
        extra_encounters: 2,
        claims: false,
    };
    /// The scale benchmark: about 270 resources a patient, like a Synthea record.
    pub const SCALE: Shape = Shape {
        min_encounters: 20,
        extra_encounters: 4,
        claims: true,
    };
}

pub fn patient_bundle(seed: u64, n: u64) -> Value {
    patient_bundle_shaped(seed, n, Shape::DEMO)
}

pub fn patient_bundle_shaped(seed: u64, n: u64, shape: Shape) -> Value {
    let mut g = Gen(seed ^ (n.wrapping_mul(0x2545_F491_4F6C_DD1D)));
    let mut entries = Vec::new();
    let p = g.uuid();
    let female = g.below(2) == 0;
    let given = if female { g.pick(GIVEN_F) } else { g.pick(GIVEN_M) };
    let family = g.pick(FAMILY);
    let birth_year = 1935 + g.below(80) as i64;
    let birth = date(birth_year, 1 + g.below(12), 1 + g.below(28));
    let mrn = format!("MRN{:07}", 1_000_000 + n);
    entries.push(post(
        &p,
        json!({"resourceType": "Patient", "active": true,
               "identifier": [{"use": "usual", "type": coding("http://terminology.hl7.org/CodeSystem/v2-0203", "MR", "Medical record number"),
                               "system": MRN, "value": mrn}],
               "name": [{"use": "official", "family": family, "given": [given]}],
               "telecom": [{"system": "phone", "value": format!("+44 20 7946 {:04}", g.below(10000)), "use": "home"},
                           {"system": "email", "value": format!("{}.{}@example.org", given.to_lowercase(), family.to_lowercase())}],
               "gender": if female { "female" } else { "male" },
               "birthDate": birth,
               "address": [{"line": [format!("{} {}", 1 + g.below(200), g.pick(STREETS))], "city": g.pick(CITIES), "postalCode": format!("N{} {}AB", 1 + g.below(9), g.below(10)), "country": "GB"}],
               "generalPractitioner": [practitioner_ref(n)],
               "managingOrganization": {"reference": format!("Organization?identifier={ORG_ID}|org-1")}}),
    ));
    let condition_count = 1 + g.below(2);
    for c in 0..condition_count {
        let (code, display) = CONDITIONS[g.below(CONDITIONS.len() as u64) as usize];
        let onset = date(2010 + g.below(14) as i64, 1 + g.below(12), 1 + g.below(28));
        let url = g.uuid();
        entries.push(post(&url, json!({"resourceType": "Condition",
            "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/condition-clinical", "active", "Active"),
            "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/condition-ver-status", "confirmed", "Confirmed"),
            "category": [coding("http://terminology.hl7.org/CodeSystem/condition-category", "problem-list-item", "Problem List Item")],
            "code": coding("http://snomed.info/sct", code, display),
            "subject": {"reference": p}, "onsetDateTime": onset, "recorder": practitioner_ref(n + c)})));
    }
    for _ in 0..(1 + g.below(2)) {
        let (code, display) = MEDICATIONS[g.below(MEDICATIONS.len() as u64) as usize];
        let url = g.uuid();
        entries.push(post(
            &url,
            json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
            "medicationCodeableConcept": coding("http://www.nlm.nih.gov/research/umls/rxnorm", code, display),
            "subject": {"reference": p}, "authoredOn": date(2023, 1 + g.below(12), 1 + g.below(28)),
            "requester": practitioner_ref(n),
            "dosageInstruction": [{"text": "one tablet daily"}]}),
        ));
    }
    if g.below(3) == 0 {
        let (code, display) = ALLERGIES[g.below(ALLERGIES.len() as u64) as usize];
        let url = g.uuid();
        entries.push(post(&url, json!({"resourceType": "AllergyIntolerance",
            "clinicalStatus": coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-clinical", "active", "Active"),
            "verificationStatus": coding("http://terminology.hl7.org/CodeSystem/allergyintolerance-verification", "confirmed", "Confirmed"),
            "type": "allergy", "criticality": "high",
            "code": coding("http://snomed.info/sct", code, display), "patient": {"reference": p}})));
    }
    for e in 0..(shape.min_encounters + g.below(shape.extra_encounters + 1)) {
        let enc = g.uuid();
        let year = if shape.claims {
            2005 + g.below(21)
        } else {
            2022 + g.below(4)
        };
        let day = date(year as i64, 1 + g.below(12), 1 + g.below(28));
        let start = format!("{day}T{:02}:{:02}:00+00:00", 8 + g.below(9), g.below(60));
        entries.push(post(&enc, json!({"resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB", "display": "ambulatory"},
            "type": [coding("http://snomed.info/sct", "185349003", "Encounter for check up")],
            "subject": {"reference": p},
            "participant": [{"individual": practitioner_ref(n + e)}],
            "period": {"start": start, "end": start},
            "serviceProvider": {"reference": format!("Organization?identifier={ORG_ID}|org-1")}})));
        let vitals: [(&str, &str, f64, &str); 4] = [
            ("8867-4", "Heart rate", g.range(55.0, 105.0), "/min"),
            ("8310-5", "Body temperature", g.range(36.1, 38.4), "Cel"),
            ("29463-7", "Body weight", g.range(48.0, 115.0), "kg"),
            ("8302-2", "Body height", g.range(150.0, 195.0), "cm"),
        ];
        for (code, display, value, unit) in vitals {
            let url = g.uuid();
            entries.push(post(
                &url,
                quantity_obs(
                    &Context {
                        patient: &p,
                        encounter: &enc,
                        when: &start,
                    },
                    code,
                    display,
                    value,
                    unit,
                    "vital-signs",
                ),
            ));
        }
        let bp = g.uuid();
        let (sys, dia) = (g.range(100.0, 165.0).round(), g.range(60.0, 100.0).round());
        entries.push(post(&bp, json!({"resourceType": "Observation", "status": "final",
            "category": [coding("http://terminology.hl7.org/CodeSystem/observation-category", "vital-signs", "Vital Signs")],
            "code": coding("http://loinc.org", "85354-9", "Blood pressure panel"),
            "subject": {"reference": p}, "encounter": {"reference": enc}, "effectiveDateTime": start,
            "component": [
                {"code": coding("http://loinc.org", "8480-6", "Systolic blood pressure"),
                 "valueQuantity": {"value": sys, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}},
                {"code": coding("http://loinc.org", "8462-4", "Diastolic blood pressure"),
                 "valueQuantity": {"value": dia, "unit": "mm[Hg]", "system": "http://unitsofmeasure.org", "code": "mm[Hg]"}}
            ]})));
        let mut results = Vec::new();
        for (code, display, unit, lo, hi) in LABS.iter().take(2 + g.below(3) as usize) {
            let url = g.uuid();
            entries.push(post(
                &url,
                quantity_obs(
                    &Context {
                        patient: &p,
                        encounter: &enc,
                        when: &start,
                    },
                    code,
                    display,
                    g.range(*lo, *hi),
                    unit,
                    "laboratory",
                ),
            ));
            results.push(json!({"reference": url}));
        }
        let report = g.uuid();
        entries.push(post(&report, json!({"resourceType": "DiagnosticReport", "status": "final",
            "category": [coding("http://terminology.hl7.org/CodeSystem/v2-0074", "LAB", "Laboratory")],
            "code": coding("http://loinc.org", "24323-8", "Comprehensive metabolic panel"),
            "subject": {"reference": p}, "encounter": {"reference": enc}, "effectiveDateTime": start,
            "issued": format!("{day}T18:00:00+00:00"), "performer": [{"reference": format!("Organization?identifier={ORG_ID}|org-3")}],
            "result": results})));
        if shape.claims {
            claim_and_eob(&mut g, &mut entries, &p, &enc, &day);
        }
    }
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

/// The billing side of an encounter, shaped like Synthea's: a Claim and its EOB.
fn claim_and_eob(g: &mut Gen, entries: &mut Vec<Value>, patient: &str, enc: &str, day: &str) {
    let claim = g.uuid();
    let total = (g.range(80.0, 900.0) * 100.0).round() / 100.0;
    let period = json!({"start": format!("{day}T08:00:00+00:00"), "end": format!("{day}T09:00:00+00:00")});
    let item = json!([{"sequence": 1, "productOrService": coding("http://snomed.info/sct", "185349003", "Encounter for check up"),
                       "encounter": [{"reference": enc}], "net": {"value": total, "currency": "USD"}}]);
    entries.push(post(&claim, json!({"resourceType": "Claim", "status": "active",
        "type": coding("http://terminology.hl7.org/CodeSystem/claim-type", "institutional", "Institutional"),
        "use": "claim", "patient": {"reference": patient}, "billablePeriod": period, "created": format!("{day}T09:00:00+00:00"),
        "provider": {"reference": format!("Organization?identifier={ORG_ID}|org-1")},
        "priority": coding("http://terminology.hl7.org/CodeSystem/processpriority", "normal", "Normal"),
        "insurance": [{"sequence": 1, "focal": true, "coverage": {"display": "Medicare"}}],
        "item": item, "total": {"value": total, "currency": "USD"}})));
    let eob = g.uuid();
    entries.push(post(&eob, json!({"resourceType": "ExplanationOfBenefit", "status": "active",
        "type": coding("http://terminology.hl7.org/CodeSystem/claim-type", "institutional", "Institutional"),
        "use": "claim", "patient": {"reference": patient}, "billablePeriod": period, "created": format!("{day}T09:00:00+00:00"),
        "insurer": {"display": "Medicare"}, "provider": {"reference": format!("Organization?identifier={ORG_ID}|org-1")},
        "claim": {"reference": claim}, "outcome": "complete",
        "insurance": [{"focal": true, "coverage": {"display": "Medicare"}}],
        "item": item, "total": [{"category": coding("http://terminology.hl7.org/CodeSystem/adjudication", "submitted", "Submitted Amount"),
                                 "amount": {"value": total, "currency": "USD"}}],
        "payment": {"amount": {"value": (total * 0.8 * 100.0).round() / 100.0, "currency": "USD"}}})));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_shaped() {
        assert_eq!(patient_bundle(7, 3), patient_bundle(7, 3));
        assert_ne!(patient_bundle(7, 3), patient_bundle(7, 4));
        let b = patient_bundle(7, 1);
        let entries = b["entry"].as_array().map(Vec::len).unwrap_or(0);
        assert!(entries > 15, "a patient has a real record, got {entries} entries");
        assert_eq!(reference_bundle(7)["entry"].as_array().map(Vec::len), Some(3 + 4 + 16));
        let long = patient_bundle_shaped(7, 1, Shape::SCALE);
        let n = long["entry"].as_array().map(Vec::len).unwrap_or(0);
        assert!((200..=340).contains(&n), "a scale record is Synthea-sized, got {n}");
    }
}
