//! Sealing and opening a typical resource (a Synthea Observation of about 1.5 KB), the work
//! encryption adds to every write and read.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use carevault_crypto::{DataKey, KeyFile, RowBinding, SystemRandomSource};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use std::hint::black_box;

fn typical_resource() -> Vec<u8> {
    let mut body = String::from(
        r#"{"resourceType":"Observation","id":"0d6ff3a4-5d0e-4c1e-9b1b-2f5d6c1d7e8f","meta":{"versionId":"1","lastUpdated":"2026-11-28T10:00:00.000Z"},"status":"final","category":[{"coding":[{"system":"http://terminology.hl7.org/CodeSystem/observation-category","code":"vital-signs","display":"vital-signs"}]}],"code":{"coding":[{"system":"http://loinc.org","code":"85354-9","display":"Blood Pressure"}],"text":"Blood Pressure"},"subject":{"reference":"Patient/5c1b0d3e-8f7a-4b2c-9d1e-3a4b5c6d7e8f"},"encounter":{"reference":"Encounter/9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"},"effectiveDateTime":"2016-03-22T21:57:18-04:00","issued":"2016-03-22T21:57:18.000-04:00","component":["#,
    );
    for (code, name, v) in [
        ("8462-4", "Diastolic Blood Pressure", 82),
        ("8480-6", "Systolic Blood Pressure", 128),
    ] {
        body.push_str(&format!(
            r#"{{"code":{{"coding":[{{"system":"http://loinc.org","code":"{code}","display":"{name}"}}],"text":"{name}"}},"valueQuantity":{{"value":{v},"unit":"mm[Hg]","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}}},"#
        ));
    }
    body.pop();
    body.push_str("]}");
    body.into_bytes()
}

fn bench(c: &mut Criterion) {
    let rng = SystemRandomSource::new();
    let keys = KeyFile::parse(&KeyFile::generate(&rng).unwrap()).unwrap();
    let (key, _) = DataKey::generate(&keys, &rng, "default", "p1").unwrap();
    let body = typical_resource();
    let row = RowBinding {
        tenant: "default",
        rtype: "Observation",
        id: "0d6ff3a4",
        version: 1,
        patient: "p1",
        key_id: 3,
    };
    let sealed = key.seal(&rng, &row, &body).unwrap();
    let mut g = c.benchmark_group("resource");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("seal", |b| {
        b.iter(|| key.seal(&rng, black_box(&row), black_box(&body)).unwrap())
    });
    g.bench_function("open", |b| {
        b.iter(|| key.open(black_box(&row), black_box(&sealed)).unwrap())
    });
    g.bench_function("seal+open", |b| {
        b.iter(|| {
            let s = key.seal(&rng, black_box(&row), black_box(&body)).unwrap();
            key.open(&row, &s).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
