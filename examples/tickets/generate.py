"""Generate ``tickets.jsonl``: labelled support tickets for the classifier demo (seeded).

Run ``python examples/tickets/generate.py`` to rewrite ``tickets.jsonl`` beside this file; the same
seed always gives the same file. Each ticket is ``{"id", "text", "label"}`` with ``label`` one of
``billing``, ``bug`` or ``other`` (definitions in README.md).

Tickets come from hand-written templates in groups. The *obvious* groups use the words a minimal
prompt already handles (invoice, charged, crash, error ...); the *subtle* groups are phrased the way
customers often write (refunds, chargebacks, subscriptions, receipts and tax; pages that don't load,
apps that freeze, data that doesn't sync), which a minimal prompt tends to call ``other``. A few
``other`` tickets mention a bug-ish word in passing (a bug bounty, an API's error format): no
keyword rule gets those right.
"""

from __future__ import annotations

import json
import random
import re
import sys
from pathlib import Path

__all__ = ["GROUPS", "SEED", "generate", "main"]

SEED = 20260401

FILL: dict[str, list[str]] = {
    "name": [
        "Priya",
        "Tomás",
        "Aiko",
        "Jonas",
        "Fatima",
        "Liam",
        "Chen",
        "Olga",
        "Marcus",
        "Zanele",
        "Rafael",
        "Sofia",
        "Dev",
        "Hannah",
        "Kwame",
        "Inès",
        "Mateo",
        "Yara",
    ],
    "feature": [
        "dashboard",
        "reports page",
        "calendar view",
        "kanban board",
        "timeline",
        "analytics tab",
        "project list",
        "shared inbox",
        "file browser",
        "team overview",
    ],
    "device": [
        "iPhone",
        "Android phone",
        "iPad",
        "Windows laptop",
        "MacBook",
        "Chromebook",
        "Pixel tablet",
    ],
    "browser": ["Chrome", "Firefox", "Safari", "Edge"],
    "integration": [
        "Slack",
        "Salesforce",
        "Google Drive",
        "Jira",
        "HubSpot",
        "Zapier",
        "Microsoft Teams",
        "GitHub",
    ],
    "export": [
        "our project data",
        "time entries",
        "the contact list",
        "last quarter's reports",
        "all comments",
    ],
    "plan": ["Starter", "Team", "Business", "Pro", "Enterprise"],
    "month": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "company": [
        "Northwind Traders",
        "Acme Logistics",
        "Bluebird Studio",
        "Kestrel Labs",
        "Harbor & Vine",
        "Oakridge Dental",
        "Pixelpine GmbH",
        "Sunlit Tours",
    ],
    "os": ["Windows 11", "macOS Sonoma", "Ubuntu 24.04", "iOS 19", "Android 16"],
    "filetype": ["PDF", "PNG", "CSV", "DOCX", "HEIC"],
    "item": ["task", "project", "note", "board", "checklist"],
    "idp": ["Okta", "Azure AD", "Google Workspace", "OneLogin"],
    "country": ["Germany", "Ireland", "Spain", "the Netherlands", "Poland"],
}

OPENERS = [
    "",
    "",
    "",
    "Hi,",
    "Hello,",
    "Hi team,",
    "Hey there,",
    "Good morning,",
    "Hello support,",
    "Hi folks,",
]
CLOSERS = [
    "",
    "",
    "",
    "Thanks!",
    "Thank you.",
    "Thanks in advance.",
    "Please advise.",
    "Cheers, {name}",
    "Regards, {name}",
    "Any help appreciated.",
    "This is urgent for us.",
]

# (group, label, how many, templates). Counts sum to 330.
GROUPS: list[tuple[str, str, int, list[str]]] = [
    (
        "billing-obvious",
        "billing",
        60,
        [
            "I was charged twice for {month}. Can you look into it?",
            "My invoice for {month} lists {n} seats but we only have {m} people on the account.",
            "Where can I download past invoices for our accounting team?",
            "The payment for invoice INV-{inv} went through on our side but your portal still says "
            "unpaid.",
            "Can you update the billing address on our invoices to our new office in {country}?",
            "We were charged {amount} instead of {amount2} this month, what happened?",
            "Our credit card expired. How do I update the payment method before the next cycle?",
            "Why was my card charged {amount} on the {day}th?",
            "The invoice should show our company name, {company}, not my personal name.",
            "Is it possible to pay by bank transfer instead of credit card?",
            "I got billed for {plan} but we've been on {plan2} since {month}.",
            "There's a charge from you on my statement that I don't recognise.",
            "Could we get net-30 payment terms on future invoices?",
            "The amount on the latest invoice doesn't match the quote your sales rep sent.",
            "Please resend invoice INV-{inv}; it never arrived in our finance inbox.",
            "Our finance team needs every invoice from last year in a single PDF.",
            "Our payment keeps failing, but the same card works everywhere else.",
            "Why is there a pending charge of {amount} when nobody used the product this month?",
            "How do I add a PO number to our invoices?",
            "I was billed the day after my trial ended, I thought I'd get a reminder first.",
            "Can I split the bill across two company cards?",
            "We got overcharged for seats we removed last week.",
            "Who do I talk to about a billing mistake on our account?",
            "The payment confirmation email says {amount} but my bank shows {amount2}.",
            "We need the invoices to go to accounts@{domain} instead of me.",
        ],
    ),
    (
        "billing-refund",
        "billing",
        16,
        [
            "I'd like a refund for last month, we stopped using the app in week one.",
            "How long does a refund usually take to reach my account?",
            "Can I get my money back? The product isn't what our team expected.",
            "You promised a refund two weeks ago and nothing has arrived yet.",
            "Am I eligible for a refund if I close the account within 30 days?",
            "Please reimburse the extra {amount} we paid for seats we never used.",
            "Where is my refund? It's been ten business days.",
            "The refund shows as processed but my bank says nothing came in.",
            "Does your money back guarantee apply to team accounts too?",
            "I was told I'd get a partial refund for the outage on the {day}th.",
            "Could you send my money back to a different card? The old one is closed.",
            "We paid twice by accident. Can you refund one of the two?",
        ],
    ),
    (
        "billing-chargeback",
        "billing",
        8,
        [
            "My bank opened a chargeback on the {amount} transaction. What do you need from me?",
            "We disputed a transaction from your company by mistake. How do we withdraw it?",
            "Our account was suspended after the chargeback, can we sort this out?",
            "I want to dispute the {amount} taken on the {day}th, I never authorised it.",
            "Our finance team filed a chargeback, but we'd rather settle it with you directly.",
        ],
    ),
    (
        "billing-subscription",
        "billing",
        18,
        [
            "How do I cancel my subscription before it renews?",
            "Please turn off auto-renewal for our workspace.",
            "I want to upgrade our plan to {plan} for the whole team.",
            "Can we switch from the monthly plan to the annual plan?",
            "Our subscription renewed yesterday even though I'd switched that off.",
            "What happens to our projects if we downgrade to the {plan} plan?",
            "Is there a discount if we renew for two years up front?",
            "I'd like to add {n} seats to our subscription.",
            "My subscription shows as expired, but I renewed it on {month} {day}.",
            "Can I pause my subscription over the summer?",
            "How much would it cost to change our plan to {plan} mid-cycle?",
            "When exactly does our annual plan renew?",
            "We're a nonprofit. Do you offer a reduced subscription price?",
        ],
    ),
    (
        "billing-receipts-tax",
        "billing",
        8,
        [
            "I need a receipt for the {amount} I paid in {month}.",
            "Can you add our VAT number to the account? We're registered in {country}.",
            "Why did sales tax appear on our last order? We're tax exempt.",
            "Our accountant needs receipts for every month of last year.",
            "Please remove VAT, we're a registered business in {country}.",
            "Where do I enter our tax ID?",
            "The receipt shows our old company name, can you update it to {company}?",
        ],
    ),
    (
        "bug-obvious",
        "bug",
        75,
        [
            "The app crashes every time I open the {feature} on my {device}.",
            "I'm getting an error 500 when I try to export {export}.",
            "The {feature} is broken after today's update.",
            "Found a bug: the {feature} shows yesterday's numbers, not today's.",
            "Uploading a {filetype} gives me 'Unexpected error, try again later'.",
            "Our {integration} integration throws an exception since this morning.",
            "The mobile app crashed while I was saving a draft and I lost everything.",
            "Every time I click Save I get an error saying 'something went wrong'.",
            "Search is broken: it returns nothing for any query, even exact titles.",
            "There's a bug in the date picker, it jumps to the wrong month.",
            "The desktop app crashes on startup on {os}.",
            "I get a permission error on files I created myself.",
            "CSV import fails with error code E{code}.",
            "The invite link in your welcome email is broken.",
            "Push notifications are broken on my {device} since the last release.",
            "After the update the app crashes when I rotate my {device}.",
            "Dragging a card on the {feature} throws a JavaScript error in {browser}.",
            "Looks like a bug: comments I delete come back after a refresh.",
            "The {feature} crashes if the project name has an emoji in it.",
            "Two-factor setup fails with 'invalid token' error even with a fresh code.",
            "Printing the {feature} produces a broken layout with overlapping text.",
            "The webhook to {integration} fails with a 502 error about half the time.",
            "Sorting by due date is broken, overdue items end up at the bottom.",
            "I keep getting 'session expired' errors every few minutes.",
            "The {device} app crashes when I attach a {filetype}.",
        ],
    ),
    (
        "bug-not-loading",
        "bug",
        13,
        [
            "The {feature} doesn't load at all, I just see a blank page.",
            "Since this morning the {feature} won't load in {browser}.",
            "The reports page is stuck on loading forever.",
            "I get a blank screen after logging in on my {device}.",
            "The spinner keeps going and the {feature} never shows up.",
            "Images in the editor are not loading for anyone on our team.",
            "The settings page fails to load when I'm on the company VPN.",
            "Our shared {feature} doesn't load for new teammates.",
            "Attachments never load in the {device} app.",
        ],
    ),
    (
        "bug-freezes",
        "bug",
        12,
        [
            "The app freezes when I scroll through a long {feature}.",
            "The editor hangs for about 30 seconds every time I paste a table.",
            "{browser} becomes unresponsive as soon as I open the {feature}.",
            "The {device} app stops responding after a few minutes of use.",
            "Everything is frozen after I click Export.",
            "The page is not responding whenever I drag a card to another column.",
            "The {feature} freezes on {os} when two people edit at once.",
        ],
    ),
    (
        "bug-sync",
        "bug",
        10,
        [
            "My notes aren't syncing between my phone and my laptop.",
            "The calendar is out of sync with Google Calendar since Tuesday.",
            "Changes I make in the {device} app don't sync to the web version.",
            "Contacts stopped syncing after I changed my password.",
            "Tasks sync fails every time, with no message at all.",
            "Files from {integration} are out of sync with what we see in the {feature}.",
        ],
    ),
    (
        "other",
        "other",
        104,
        [
            "How do I add a new teammate to our workspace?",
            "Do you have an API for exporting {export}?",
            "Can I change the email address on my account?",
            "It would be great if the {feature} had a dark mode.",
            "Do you offer onboarding sessions for new teams?",
            "What are your support hours over the holidays?",
            "Is there a way to set a default time zone for the whole team?",
            "We'd love to partner with you on a webinar for {company}'s customers.",
            "How do I reset my password?",
            "Where can I find your SOC 2 report?",
            "Do you have a data processing agreement we can sign for GDPR?",
            "Is there a keyboard shortcut for creating a new {item}?",
            "Can I rename a project after it's created?",
            "Great job on the new {feature}, our team loves it!",
            "Do you integrate with {integration}?",
            "How many people can be in one workspace?",
            "Please delete my account and all of my data.",
            "Where can I suggest a feature?",
            "Can guests comment without creating an account?",
            "Is there a native app for {device}?",
            "What's the difference between an admin and an owner?",
            "How do I transfer ownership of the workspace to a colleague?",
            "Is our data stored in the EU?",
            "Can we use single sign-on with {idp}?",
            "How do I archive old projects without deleting them?",
            "Is there a template for weekly team meetings?",
            "Is offline mode on your roadmap?",
            "Could someone from your team speak at our meetup in {country}?",
            "How do I move a {item} from one project to another?",
            "Can I customise the colours of the {feature}?",
            "We're evaluating tools for {company}. Could we book a demo?",
            "Is there a limit on how many {item}s a project can hold?",
            "How do I turn off the weekly summary email?",
            "Can I give a contractor access to just one project?",
            "Where is the setting for two-factor authentication?",
            "Do you have a public status page our on-call team can watch?",
            "What file types can I attach to a {item}?",
            "I love the new keyboard shortcuts, thanks for shipping them.",
            "Can I export {export} to {integration}?",
            "How do I change the language of the interface to Spanish?",
        ],
    ),
    (
        "other-keyword",
        "other",
        6,
        [
            "Do you run a bug bounty program for security researchers?",
            "How can I make your API return error details as JSON instead of HTML?",
            "Can the crash reporting add-on send its alerts to {integration}?",
        ],
    ),
]


def _fill(template: str, rng: random.Random) -> str:
    def pick(match: re.Match[str]) -> str:
        key = match.group(1)
        if key in ("amount", "amount2"):
            return f"{rng.choice(['$', '€', '£'])}{rng.randint(9, 480)}.{rng.randint(0, 99):02d}"
        if key in ("n", "m"):
            return str(rng.randint(3, 40))
        if key == "inv":
            return str(rng.randint(10000, 99999))
        if key == "code":
            return str(rng.randint(1000, 9999))
        if key == "day":
            return str(rng.randint(4, 20))
        if key == "domain":
            return rng.choice(["northwind.example", "kestrel-labs.example", "sunlit.example"])
        if key == "plan2":
            return rng.choice(FILL["plan"])
        return rng.choice(FILL[key])

    return re.sub(r"\{(\w+)\}", pick, template)


def generate(seed: int = SEED) -> list[dict[str, str]]:
    """All tickets, shuffled, with ids ``T-0001`` onwards.

    Parameters
    ----------
    seed
        The random seed.

    Returns
    -------
    list of dict
        ``{"id", "text", "label"}`` each.
    """
    rng = random.Random(seed)
    tickets: list[tuple[str, str]] = []
    seen: set[str] = set()
    for _group, label, count, templates in GROUPS:
        made = 0
        attempts = 0
        while made < count:
            attempts += 1
            if attempts > count * 50:
                raise RuntimeError(f"cannot make {count} distinct {label} tickets")
            template = templates[attempts % len(templates)]
            body = _fill(template, rng)
            opener = rng.choice(OPENERS)
            closer = _fill(rng.choice(CLOSERS), rng)
            text = "\n".join(part for part in (opener, body, closer) if part)
            if text.lower() in seen:
                continue
            seen.add(text.lower())
            tickets.append((text, label))
            made += 1
    rng.shuffle(tickets)
    return [
        {"id": f"T-{i:04d}", "text": text, "label": label}
        for i, (text, label) in enumerate(tickets, start=1)
    ]


def main() -> int:
    """Write ``tickets.jsonl`` beside this script."""
    tickets = generate()
    path = Path(__file__).with_name("tickets.jsonl")
    with path.open("w", encoding="utf-8") as stream:
        for ticket in tickets:
            stream.write(json.dumps(ticket, ensure_ascii=False) + "\n")
    counts = {label: sum(t["label"] == label for t in tickets) for label in ("billing", "bug")}
    counts["other"] = len(tickets) - sum(counts.values())
    print(f"wrote {len(tickets)} tickets to {path}: {counts}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
