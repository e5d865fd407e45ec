"""Drives a running carevault with the Python clients hospitals use: fhirclient and fhirpy.

Usage: python_clients.py BASE_URL TOKEN   (REQUESTS_CA_BUNDLE must trust the server's cert)
Each client creates, reads, updates and deletes a Patient; any failure raises.
"""

import sys

import requests
from fhirclient import client as fc_client
from fhirclient.models.humanname import HumanName
from fhirclient.models.patient import Patient as FcPatient
from fhirpy import SyncFHIRClient

BASE, TOKEN = sys.argv[1], sys.argv[2]
passed = 0


def check(cond, what):
    global passed
    if not cond:
        raise AssertionError(what)
    passed += 1


def fhirclient_crud():
    smart = fc_client.FHIRClient(settings={"app_id": "carevault-interop", "api_base": BASE + "/"})
    smart.server.session.headers["Authorization"] = "Bearer " + TOKEN
    p = FcPatient({"resourceType": "Patient", "active": True})
    name = HumanName()
    name.family = "Interop"
    name.given = ["Fhirclient"]
    p.name = [name]
    created = p.create(smart.server)
    check(created is not None and created.get("id"), "fhirclient: create returns the resource")
    pid = created["id"]
    read = FcPatient.read(pid, smart.server)
    check(read.name[0].family == "Interop", "fhirclient: read")
    read.gender = "female"
    updated = read.update(smart.server)
    check(updated["meta"]["versionId"] == "2", "fhirclient: update makes version 2")
    check(FcPatient.read(pid, smart.server).gender == "female", "fhirclient: update is read back")
    read.delete(smart.server)
    r = requests.get(f"{BASE}/Patient/{pid}", headers={"Authorization": "Bearer " + TOKEN})
    check(r.status_code == 410, "fhirclient: deleted patient answers 410")
    print("fhirclient: create, read, update, delete OK")


def fhirpy_crud():
    client = SyncFHIRClient(BASE, authorization="Bearer " + TOKEN)
    p = client.resource("Patient", name=[{"family": "Interop", "given": ["Fhirpy"]}], active=True)
    p.save()
    check(p.id, "fhirpy: save assigns an id")
    got = client.reference("Patient", p.id).to_resource()
    check(got["name"][0]["given"][0] == "Fhirpy", "fhirpy: read")
    got["gender"] = "male"
    got.save()
    again = client.reference("Patient", p.id).to_resource()
    check(again["gender"] == "male" and again["meta"]["versionId"] == "2", "fhirpy: update")
    again.delete()
    r = requests.get(f"{BASE}/Patient/{p.id}", headers={"Authorization": "Bearer " + TOKEN})
    check(r.status_code == 410, "fhirpy: deleted patient answers 410")
    print("fhirpy: create, read, update, delete OK")


fhirclient_crud()
fhirpy_crud()
print(f"python interop: {passed} checks passed", flush=True)
