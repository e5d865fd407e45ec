"""Drives a running carevault with the Python clients hospitals use: fhirclient and fhirpy.

Usage: python_clients.py BASE_URL TOKEN   (REQUESTS_CA_BUNDLE must trust the server's cert)
Each client creates, reads, updates and deletes a Patient and searches with paging; fhirclient
also signs a patient in
through SMART App Launch (authorization code + PKCE: the script plays the browser on the login
and consent pages) and reads the patient in context. Any failure raises.
CAREVAULT_BIN and CAREVAULT_DATA name the binary and data directory (for `user add` and
`client add`).
"""

import html
import os
import re
import subprocess
import sys
import tempfile

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


def tagged_patients(family, n):
    """Creates n Patients of this family under a fresh tag; returns the tag as system|code."""
    code = f"{family.lower()}-{os.getpid()}"
    for i in range(n):
        r = requests.post(f"{BASE}/Patient",
                          json={"resourceType": "Patient", "meta": {"tag": [{"system": "urn:interop", "code": code}]},
                                "name": [{"family": family, "given": [f"G{i}"]}]},
                          headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/fhir+json"})
        check(r.status_code == 201, f"create {family} {i}")
    return f"urn:interop|{code}"


def fhirpy_search():
    client = SyncFHIRClient(BASE, authorization="Bearer " + TOKEN)
    tag = tagged_patients("Pyfind", 5)
    found = client.resources("Patient").search(_tag=tag).limit(2).fetch_all()
    check(len(found) == 5 and len({p.id for p in found}) == 5, "fhirpy: fetch_all follows next links")
    check(client.resources("Patient").search(_tag=tag).count() == 5, "fhirpy: count")
    # A name prefix, case- and accent-insensitive, answered through the blind index.
    named = client.resources("Patient").search(family="pyfí", _tag=tag).fetch_all()
    check(len(named) == 5, "fhirpy: name prefix")
    newest = client.resources("Patient").search(_tag=tag).sort("-_lastUpdated").first()
    check(newest["name"][0]["given"][0] == "G4", "fhirpy: sort by -_lastUpdated")
    # A filter expression: the prefix ANDed at the top, an OR of tags under it.
    filtered = client.resources("Patient").search(
        _filter=f'family sw "pyf" and (_tag eq {tag} or _tag eq urn:interop|none)').fetch_all()
    check(len(filtered) == 5, "fhirpy: _filter")
    print("fhirpy: search, paging, count, sort, _filter OK")


def fhirclient_search():
    smart = fc_client.FHIRClient(settings={"app_id": "carevault-interop", "api_base": BASE + "/"})
    smart.server.session.headers["Authorization"] = "Bearer " + TOKEN
    tag = tagged_patients("Fcfind", 5)
    found = list(FcPatient.where(struct={"_tag": tag, "_count": "2"}).perform_resources_iter(smart.server))
    check(len(found) == 5 and len({p.id for p in found}) == 5, "fhirclient: perform_resources_iter follows next")
    check(all(p.name[0].family == "Fcfind" for p in found), "fhirclient: the resources parse")
    print("fhirclient: search and paging OK")


def hidden_fields(page):
    return {m.group(1): html.unescape(m.group(2))
            for m in re.finditer(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', page)}


def cli(*args):
    out = subprocess.run([os.environ["CAREVAULT_BIN"], *args, "--data-dir", os.environ["CAREVAULT_DATA"]],
                         check=True, capture_output=True, text=True)
    return out.stdout.strip()


def fhirclient_smart():
    # A patient with an account, and the app registered by the operator.
    created = requests.post(f"{BASE}/Patient", json={"resourceType": "Patient", "name": [{"family": "Smart"}]},
                            headers={"Authorization": "Bearer " + TOKEN, "Content-Type": "application/fhir+json"})
    check(created.status_code == 201, "fhirclient smart: patient created")
    pid = created.json()["id"]
    with tempfile.NamedTemporaryFile("w", suffix=".pw", delete=False) as pw:
        pw.write("correct horse battery staple\n")
    cli("user", "add", "--username", "smart.patient", "--role", "patient", "--patient", f"Patient/{pid}",
        "--password-file", pw.name)
    os.unlink(pw.name)
    redirect = "http://127.0.0.1:9/fhirclient-callback"
    client_id = cli("client", "add", "--name", "fhirclient interop", "--redirect-uri", redirect,
                    "--scopes", "launch/patient patient/*.rs openid profile fhirUser offline_access")

    # fhirclient discovers the endpoints from the CapabilityStatement and builds the request.
    smart = fc_client.FHIRClient(settings={
        "app_id": client_id, "api_base": BASE + "/", "redirect_uri": redirect,
        "scope": "launch/patient patient/*.read openid fhirUser offline_access",
    })
    check(smart.prepare() is False, "fhirclient smart: not authorized yet")
    url = smart.authorize_url
    check("code_challenge_method=S256" in url, "fhirclient smart: PKCE S256 in the request")

    # The browser: the login page, the consent screen, the redirect back.
    browser = requests.Session()
    login = browser.get(url)
    check(login.status_code == 200 and "Sign in" in login.text, "fhirclient smart: login page")
    root = BASE[: -len("/fhir")]
    form = hidden_fields(login.text)
    form.update({"username": "smart.patient", "password": "correct horse battery staple", "totp": ""})
    consent = browser.post(f"{root}/oauth/authorize", data=form)
    check(consent.status_code == 200 and "Allow access?" in consent.text, "fhirclient smart: consent screen")
    ticket = hidden_fields(consent.text)["ticket"]
    back = browser.post(f"{root}/oauth/consent", data={"ticket": ticket, "decision": "approve"},
                        allow_redirects=False)
    check(back.status_code == 303 and back.headers["Location"].startswith(redirect), "fhirclient smart: redirect")

    # fhirclient exchanges the code (with its verifier) and reads the patient in context.
    smart.handle_callback(back.headers["Location"])
    check(smart.ready, "fhirclient smart: has an access token")
    check(smart.patient_id == pid, "fhirclient smart: the patient in context")
    check(smart.patient.name[0].family == "Smart", "fhirclient smart: reads the patient in context")
    other = FcPatient({"resourceType": "Patient"})
    other_id = requests.post(f"{BASE}/Patient", json={"resourceType": "Patient"},
                             headers={"Authorization": "Bearer " + TOKEN,
                                      "Content-Type": "application/fhir+json"}).json()["id"]
    try:
        FcPatient.read(other_id, smart.server)
        check(False, "fhirclient smart: another patient must not be readable")
    except Exception as e:  # fhirclient raises on 404
        check("404" in str(e), f"fhirclient smart: another patient answers 404 ({e})")
    del other
    # The refresh token keeps the app signed in.
    smart.reauthorize()
    check(smart.ready and smart.patient.name[0].family == "Smart", "fhirclient smart: refresh")
    print("fhirclient: SMART authorization code + PKCE, patient in context, refresh OK")


fhirclient_crud()
fhirclient_search()
fhirclient_smart()
fhirpy_crud()
fhirpy_search()
print(f"python interop: {passed} checks passed", flush=True)
