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
}

main().catch((e) => {
  console.error('fhir-kit-client interop failed:', e && (e.stack || e));
  process.exit(1);
});
