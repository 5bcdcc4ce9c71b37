"""Drives the dashboard in Debian's Chromium with Playwright.

Run by tests/e2e/dashboard.rs against a server it started with two users:
    dashboard.py BASE_URL KEY_A KEY_B AXE_JS SHOTS_DIR
Exits non-zero with the failed step on stderr. Every page visited is
scanned with axe-core (serious and critical violations fail the run) and
photographed into SHOTS_DIR.
"""

import json
import re
import shutil
import sys

from playwright.sync_api import expect, sync_playwright

BASE, KEY_A, KEY_B, AXE, SHOTS = sys.argv[1:6]
AXE_SOURCE = open(AXE, encoding="utf-8").read()
scanned = []


def check(page, name):
    """Screenshot, then axe: no serious or critical violation."""
    page.screenshot(path=f"{SHOTS}/{name}.png", full_page=True)
    page.evaluate(AXE_SOURCE)
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    bad = [
        {"id": v["id"], "impact": v["impact"], "nodes": [n["html"][:120] for n in v["nodes"][:3]]}
        for v in result["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    if bad:
        raise AssertionError(f"axe on {name} ({page.url}): {json.dumps(bad, indent=1)}")
    scanned.append(name)


def sign_in(page, key):
    page.goto(BASE + "/")
    expect(page).to_have_url(re.compile(r"/signin$"))
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/campaigns$"))


def new_draft(page, list_id, name, text, rate=None, send_at=None):
    """Creates a draft through the form; ends on its page."""
    fill_draft(page, list_id, name, text, rate, send_at)
    page.get_by_role("button", name="Create draft").click()
    expect(page).to_have_url(re.compile(r"/campaigns/\d+$"))


def fill_draft(page, list_id, name, text, rate=None, send_at=None):
    """Fills a new draft's form, not yet sent."""
    page.goto(BASE + "/campaigns/new")
    page.get_by_label("Name", exact=True).fill(name)
    page.get_by_label("Subject", exact=True).fill(name + " {{ subscriber.name }}")
    page.get_by_label("From address").fill("news@example.org")
    page.get_by_label("List", exact=True).select_option(value=list_id)
    if rate:
        page.get_by_label("Emails per minute").fill(str(rate))
    if send_at:
        page.get_by_label("Send at").fill(send_at)
        page.get_by_label("At that time in each subscriber's time zone").check()
    page.get_by_label("Text body", exact=True).fill(text)


def csv_file(name, text):
    return {"name": name, "mimeType": "text/csv", "buffer": text.encode()}


def main():
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        alice = browser.new_context()
        page = alice.new_page()
        csp_errors = []
        page.on("console", lambda m: csp_errors.append(m.text) if "Content Security Policy" in m.text else None)

        page.goto(BASE + "/")
        check(page, "signin")
        # A wrong key is refused on the page.
        page.get_by_label("API key").fill("posta_wrong")
        page.get_by_role("button", name="Sign in").click()
        expect(page.locator("#error-key")).to_contain_text("Unknown API key")
        sign_in(page, KEY_A)
        check(page, "campaigns-empty")

        # A list, and a CSV with one bad row: the error names its line.
        page.goto(BASE + "/lists")
        page.get_by_label("Name", exact=True).fill("Readers")
        page.get_by_role("button", name="Create list").click()
        expect(page).to_have_url(re.compile(r"/lists/\d+$"))
        list_url = page.url
        page.get_by_label("CSV file").set_input_files(
            csv_file("readers.csv", "email,name\nada@example.org,Ada\nnot-an-email,Bad\nbob@example.org,Bob\n")
        )
        page.get_by_role("button", name="Upload").click()
        expect(page.get_by_role("status")).to_contain_text("2 created, 0 updated, 1 rejected")
        row = page.locator("tr.row-error")
        expect(row).to_have_count(1)
        expect(row.locator("td").nth(0)).to_have_text("3")
        expect(row.locator("td").nth(1)).to_have_text("email")
        check(page, "list-import")
        page.get_by_label("Status", exact=True).select_option("subscribed")
        page.get_by_role("button", name="Filter").click()
        expect(page.locator("table tbody tr")).to_have_count(2)
        check(page, "list-subscribers")

        # Bad input comes back next to the field, as the API words it.
        page.goto(BASE + "/campaigns/new")
        check(page, "campaign-new")
        page.get_by_label("Name", exact=True).fill("Hello")
        page.get_by_label("Subject", exact=True).fill("Hi {{ subscriber.name }}")
        page.get_by_label("From address").fill("news@example.org")
        page.get_by_label("List", exact=True).select_option(value=list_url.rsplit("/", 1)[1])
        # The live preview renders the form as it is typed, sample data first.
        page.get_by_label("Text body", exact=True).fill("Hi {{ subscriber.name }}")
        expect(page.locator("[data-live-subject]")).to_have_text("Hi Sample Subscriber")
        expect(page.locator("[data-live-text]")).to_have_text("Hi Sample Subscriber")
        page.locator("#html").fill("<p>Hi {{ subscriber.name </p>")
        expect(page.locator("[data-live-error]")).to_contain_text("syntax error")
        page.get_by_role("button", name="Create draft").click()
        expect(page.locator("#error-html")).to_contain_text("syntax error")
        check(page, "campaign-new-error")
        page.locator("#html").fill("<p>Hi {{ subscriber.name }}</p>")
        page.get_by_role("button", name="Create draft").click()
        expect(page).to_have_url(re.compile(r"/campaigns/\d+$"))
        campaign_url = page.url

        # Editing the draft, the preview follows the chosen subscriber and
        # each change; saving keeps the edit.
        page.get_by_role("link", name="Edit draft").click()
        page.get_by_label("Render for").select_option(label="bob@example.org")
        expect(page.frame_locator("iframe.preview").locator("p")).to_have_text("Hi Bob")
        page.locator("#html").fill(
            '<p>Hello {{ subscriber.name }}</p><div><a href="https://example.org/read">Read on</a></div>'
        )
        expect(page.frame_locator("iframe.preview").locator("p")).to_have_text("Hello Bob")
        page.get_by_label("Track opens").check()
        page.get_by_label("Track clicks").check()
        check(page, "campaign-edit")
        page.get_by_role("button", name="Save draft").click()
        expect(page).to_have_url(campaign_url)
        expect(page.locator("dl.facts").first).to_contain_text("opens and clicks")

        # Preview for a chosen subscriber.
        page.get_by_label("Render for").select_option(label="bob@example.org")
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("[data-preview-subject]")).to_have_text("Hi Bob")
        expect(page.frame_locator("iframe.preview").locator("p")).to_have_text("Hello Bob")
        check(page, "campaign-preview")

        # Send, and watch the bar reach 100% and the status turn sent.
        page.get_by_role("button", name="Send now").click()
        expect(page.locator("#progress-text")).to_contain_text("(100%)", timeout=20_000)
        expect(page.locator("[data-status]")).to_have_text("sent", timeout=20_000)
        bar = page.locator("#progress-bar")
        assert bar.get_attribute("value") == bar.get_attribute("max") == "2", bar.evaluate("b => b.outerHTML")
        # The message table is read when the page is; reload it.
        page.reload()
        expect(page.locator("section[aria-labelledby=messages-h] table tbody tr")).to_have_count(2)
        # Tracked: the opens and clicks, and the link with its clicks.
        engagement = page.locator("section[aria-labelledby=engagement-h]")
        expect(engagement).to_contain_text("Opened")
        expect(engagement.locator("table tbody tr")).to_have_count(1)
        expect(engagement.locator("table tbody tr td").first).to_have_text("https://example.org/read")
        check(page, "campaign-sent")

        # A rate-limited send: pause and resume it from the page.
        page.goto(list_url)
        rows = "".join(f"r{i}@example.org,R{i}\n" for i in range(60))
        page.get_by_label("CSV file").set_input_files(csv_file("many.csv", "email,name\n" + rows))
        page.get_by_role("button", name="Upload").click()
        expect(page.get_by_role("status")).to_contain_text("60 created")
        list_id = list_url.rsplit("/", 1)[1]
        new_draft(page, list_id, "Slow", "Hi", rate=60)
        page.get_by_role("button", name="Send now").click()
        expect(page.locator("[data-status]")).to_have_text("sending")
        page.get_by_role("button", name="Pause").click()
        expect(page.locator("[data-status]")).to_have_text("paused")
        expect(page.get_by_role("button", name="Resume")).to_be_visible()
        check(page, "campaign-paused")
        page.get_by_role("button", name="Resume").click()
        expect(page.locator("[data-status]")).to_have_text("sending")
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("[data-status]")).to_have_text("cancelled")

        # An A/B test set up on the form (a bad share is refused in its
        # fieldset), its variants on the campaign page, and a winner picked
        # there while the (slow) test goes out.
        fill_draft(page, list_id, "Subjects", "Hi {{ subscriber.name }}", rate=60)
        page.get_by_label("Track clicks").check()
        page.get_by_label("Test variants on part of the audience first").check()
        page.get_by_label("Test group").fill("70")
        page.get_by_label("Winner by").select_option("clicks")
        page.get_by_label("Variant A subject").fill("Plain news")
        page.get_by_label("Variant B subject").fill("Bold news, {{ subscriber.name }}")
        page.get_by_role("button", name="Create draft").click()
        expect(page.locator("#error-ab_test")).to_contain_text("test_share")
        check(page, "campaign-ab-error")
        page.get_by_label("Test group").fill("20")
        page.get_by_role("button", name="Create draft").click()
        expect(page).to_have_url(re.compile(r"/campaigns/\d+$"))
        ab = page.locator("section[aria-labelledby=ab-h]")
        expect(ab.locator("table tbody tr")).to_have_count(2)
        expect(ab.locator("table tbody tr").nth(1)).to_contain_text("Bold news")
        page.get_by_label("Variant", exact=True).select_option(label="Variant B")
        page.get_by_role("button", name="Preview").click()
        expect(page.locator("[data-preview-subject]")).to_have_text("Bold news, Sample Subscriber")
        page.get_by_role("button", name="Send now").click()
        expect(page.locator("[data-status]")).to_have_text("sending")
        check(page, "campaign-ab")
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Send B to the rest").click()
        expect(ab).to_contain_text("Variant B won (picked)")
        expect(page.get_by_role("button", name="Send A to the rest")).to_have_count(0)
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("[data-status]")).to_have_text("cancelled")

        # A send set for later is scheduled from the page, and cancelled.
        new_draft(page, list_id, "Later", "Later", send_at="2099-01-31T09:00")
        page.get_by_role("button", name="Schedule").click()
        expect(page.locator("[data-status]")).to_have_text("scheduled")
        expect(page.get_by_role("button", name="Pause")).to_have_count(0)
        page.once("dialog", lambda d: d.accept())
        page.get_by_role("button", name="Cancel").click()
        expect(page.locator("[data-status]")).to_have_text("cancelled")

        page.goto(BASE + "/campaigns")
        expect(page.locator("table tbody tr")).to_have_count(4)
        check(page, "campaigns")
        # A hard bounce through the API shows on the bounces page and
        # suppresses the address.
        api = pw.request.new_context(extra_http_headers={"Authorization": f"Bearer {KEY_A}"})
        bounced = api.post(BASE + "/api/v1/users/me/bounces", data={"email": "ada@example.org", "type": "hard"})
        assert bounced.ok, bounced.text()
        for name in ("suppressions", "bounces", "transports"):
            page.goto(f"{BASE}/{name}")
            check(page, name)
            if name != "transports":
                expect(page.locator("table tbody tr")).to_have_count(1)
                expect(page.locator("table tbody tr td").first).to_have_text("ada@example.org")

        # A segment made over the API is listed with its rules and counts
        # the list's members who match (the 60 uploaded above, r1 and
        # r10…r19 among them).
        made = api.post(BASE + "/api/v1/users/me/segments", data={
            "name": "R1 readers", "list_id": int(list_id),
            "rules": [{"field": "email", "op": "starts_with", "value": "r1"}],
        })
        assert made.ok, made.text()
        segment_url = f"{BASE}/segments/{made.json()['id']}"
        page.get_by_role("link", name="Segments").click()
        expect(page.locator("table tbody tr")).to_have_count(1)
        expect(page.locator("table tbody tr")).to_contain_text('email starts_with "r1"')
        check(page, "segments")
        page.get_by_role("link", name="R1 readers").click()
        expect(page.locator("[data-count]")).to_have_text("11")
        check(page, "segment")

        # The builder: rules as rows, counted live as they are typed; a bad
        # rule is named by its row; saved, then edited.
        page.get_by_role("link", name="All segments").click()
        page.get_by_role("link", name="New segment").click()
        page.get_by_label("Name", exact=True).fill("R2 readers")
        page.get_by_label("List", exact=True).select_option(value=list_id)
        page.get_by_label("Rule 1 field").fill("email")
        page.get_by_label("Rule 1 op").select_option("starts_with")
        page.get_by_label("Rule 1 value").fill("r2")
        live = page.locator("[data-live-count]")
        expect(live).to_have_text("11 match now, 11 of them subscribed.")
        page.get_by_label("Rule 3 field").fill("shoe_size")
        expect(live).to_contain_text("rule 3: unknown field")
        check(page, "segment-new")
        page.get_by_role("button", name="Create segment").click()
        expect(page.locator("#error-rules\\[2\\]")).to_contain_text("unknown field")
        page.get_by_label("Rule 3 field").fill("")
        page.get_by_role("button", name="Create segment").click()
        expect(page).to_have_url(re.compile(r"/segments/\d+$"))
        expect(page.locator("[data-count]")).to_have_text("11")
        page.get_by_role("link", name="Edit segment").click()
        expect(page.get_by_label("Rule 1 value")).to_have_value("r2")
        page.get_by_label("Rule 1 value").fill("r3")
        expect(live).to_have_text("11 match now, 11 of them subscribed.")
        page.get_by_label("Match").select_option("any")
        page.get_by_label("Rule 2 field").fill("email")
        page.get_by_label("Rule 2 op").select_option("eq")
        page.get_by_label("Rule 2 value").fill("R45@EXAMPLE.ORG")
        expect(live).to_have_text("12 match now, 12 of them subscribed.")
        check(page, "segment-edit")
        page.get_by_role("button", name="Save segment").click()
        expect(page.locator("[data-count]")).to_have_text("12")

        # Alice, the first user, is the admin: she grants Bob a sender
        # domain on his page (a bad name is refused on the form) and takes
        # one away again.
        page.get_by_role("link", name="Users").click()
        expect(page).to_have_url(re.compile(r"/admin/users$"))
        check(page, "admin-users")
        page.get_by_role("link", name="bob@example.org").click()
        expect(page).to_have_url(re.compile(r"/admin/users/\d+$"))
        bob_admin_url = page.url
        page.get_by_label("Domain").fill("not a domain")
        page.get_by_role("button", name="Grant").click()
        expect(page.locator("#error-domain")).to_contain_text("is not a domain name")
        for name in ("Old.Example.NET", "bob.example.net"):
            page.get_by_label("Domain").fill(name)
            page.get_by_role("button", name="Grant").click()
            expect(page).to_have_url(bob_admin_url)
        granted = page.locator("table tbody tr")
        expect(granted.filter(has_text="old.example.net")).to_have_count(1)
        expect(granted.filter(has_text="bob.example.net")).to_have_count(1)
        check(page, "admin-user")
        page.get_by_role("button", name="Take away old.example.net").click()
        expect(granted.filter(has_text="old.example.net")).to_have_count(0)
        expect(granted.filter(has_text="bob.example.net")).to_have_count(1)

        # A second user sees none of it: another user's ids are a 404 page.
        bob = browser.new_context()
        other = bob.new_page()
        sign_in(other, KEY_B)
        expect(other.locator("table")).to_have_count(0)
        # Not an admin: no Users page, not even by its address, and the
        # domain Alice granted is the one his drafts may send from.
        expect(other.get_by_role("link", name="Users")).to_have_count(0)
        for url in (BASE + "/admin/users", bob_admin_url):
            response = other.goto(url)
            assert response.status == 404, (url, response.status)
        other.goto(BASE + "/campaigns/new")
        expect(other.locator("#from-domains")).to_contain_text("bob.example.net")
        expect(other.locator("#from-domains")).not_to_contain_text("old.example.net")
        for url in (list_url, campaign_url, segment_url):
            response = other.goto(url)
            assert response.status == 404, (url, response.status)
            expect(other.locator("h1")).to_have_text("Not found")
        check(other, "not-found")

        # A forged form post (no CSRF token) is refused, and changes nothing.
        forged = other.request.post(BASE + "/lists", form={"name": "forged"}, max_redirects=0)
        assert forged.status == 403, forged.status
        forged = other.request.post(campaign_url + "/action", form={"do": "duplicate"}, max_redirects=0)
        assert forged.status == 403, forged.status
        forged = other.request.post(bob_admin_url + "/domains", form={"domain": "evil.example"}, max_redirects=0)
        assert forged.status == 404, forged.status
        other.goto(BASE + "/lists")
        expect(other.locator("table")).to_have_count(0)

        # Signing out ends the session.
        other.get_by_role("button", name="Sign out").click()
        expect(other).to_have_url(re.compile(r"/signin$"))
        other.goto(BASE + "/lists")
        expect(other).to_have_url(re.compile(r"/signin$"))

        assert not csp_errors, csp_errors
        browser.close()
    print(json.dumps({"scanned": scanned}))


if __name__ == "__main__":
    main()
