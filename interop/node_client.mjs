// Drives a running carevault with npm's fhir-kit-client.
// Usage: node node_client.js BASE_URL TOKEN   (NODE_EXTRA_CA_CERTS must trust the server's cert)
import { Client } from 'fhir-kit-client';
import assert from 'node:assert';

async function main() {
  const [baseUrl, token] = process.argv.slice(2);
  const client = new Client({ baseUrl, bearerToken: token });
  const created = await client.create({
    resourceType: 'Patient',
    body: { resourceType: 'Patient', name: [{ family: 'Interop', given: ['Kit'] }] },
  });
  assert.ok(created.id, 'create returns the resource');
  const read = await client.read({ resourceType: 'Patient', id: created.id });
  assert.strictEqual(read.name[0].given[0], 'Kit');
  read.birthDate = '1999-09-09';
  const updated = await client.update({ resourceType: 'Patient', id: created.id, body: read });
  assert.strictEqual(updated.meta.versionId, '2');
  await client.delete({ resourceType: 'Patient', id: created.id });
  let status = 0;
  try {
    await client.read({ resourceType: 'Patient', id: created.id });
  } catch (e) {
    status = e.response && e.response.status;
  }
  assert.strictEqual(status, 410, 'a deleted patient answers 410');
  console.log('fhir-kit-client: create, read, update, delete OK');

  // A transaction: a Patient and an Observation that refers to it by urn:uuid.
  const tag = { system: 'urn:interop', code: `kit-${Date.now()}` };
  const entries = [];
  for (let i = 0; i < 7; i += 1) {
    const full = `urn:uuid:00000000-0000-4000-8000-00000000000${i}`;
    entries.push({
      fullUrl: full,
      resource: { resourceType: 'Patient', meta: { tag: [tag] }, name: [{ family: 'Pager', given: [`N${i}`] }] },
      request: { method: 'POST', url: 'Patient' },
    });
    entries.push({
      resource: {
        resourceType: 'Observation', meta: { tag: [tag] }, status: 'final',
        code: { text: 'weight' }, subject: { reference: full },
      },
      request: { method: 'POST', url: 'Observation' },
    });
  }
  const tx = await client.transaction({ body: { resourceType: 'Bundle', type: 'transaction', entry: entries } });
  assert.strictEqual(tx.type, 'transaction-response');
  assert.ok(tx.entry.every((e) => e.response.status.startsWith('201')), 'every entry created');
  const firstPatient = tx.entry[0].response.location.split('/')[1];

  // Paging with next and previous links, by GET and by POST _search.
  for (const postSearch of [false, true]) {
    const ids = [];
    let page = await client.search({
      resourceType: 'Patient', searchParams: { _tag: `${tag.system}|${tag.code}`, _count: 3 }, options: { postSearch },
    });
    const pages = [];
    while (page) {
      pages.push(page.entry.map((e) => e.resource.id));
      ids.push(...page.entry.map((e) => e.resource.id));
      page = await client.nextPage({ bundle: page });
    }
    assert.strictEqual(ids.length, 7, 'seven patients over the pages');
    assert.strictEqual(new Set(ids).size, 7, 'none twice');
    assert.strictEqual(pages.length, 3, 'pages of three');
  }
  // A search across types.
  const across = await client.search({ searchParams: { _type: 'Patient,Observation', _tag: `${tag.system}|${tag.code}`, _total: 'accurate', _count: 5 } });
  assert.strictEqual(across.total, 14, 'the search across types finds both types');
  const back = await client.nextPage({ bundle: across });
  assert.ok(back && back.entry.length > 0, 'and pages');
  assert.ok(await client.prevPage({ bundle: back }), 'and pages back');
  // JSON Patch and a compartment search.
  const patched = await client.patch({
    resourceType: 'Patient', id: firstPatient, jsonPatch: [{ op: 'add', path: '/gender', value: 'other' }],
  });
  assert.strictEqual(patched.gender, 'other');
  const own = await client.search({
    resourceType: 'Observation', compartment: { resourceType: 'Patient', id: firstPatient }, searchParams: { _count: 10 },
  });
  assert.strictEqual(own.entry.length, 1, 'the patient compartment holds its observation');
  // A filter expression, by GET and by POST _search.
  for (const postSearch of [false, true]) {
    const filtered = await client.search({
      resourceType: 'Observation',
      searchParams: { _filter: `_tag eq ${tag.system}|${tag.code} and not (subject eq Patient/${firstPatient})`, _total: 'accurate' },
      options: { postSearch },
    });
    assert.strictEqual(filtered.total, 6, '_filter: every observation but the first patient\'s');
  }
  console.log('fhir-kit-client: transaction, paging (GET and POST), search across types, patch, compartment, _filter OK');
}

main().catch((e) => {
  console.error('fhir-kit-client interop failed:', e && (e.stack || e));
  process.exit(1);
});
