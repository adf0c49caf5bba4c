"""Scam and classic-spam wording rules (rules/cf/86_mailgw_phrases_scams.cf): each rule with a message that
shows the sign and a close legitimate message that must not."""

from __future__ import annotations

import pytest

from mailgw_antispam.scanner import scan


def build(body: str, subject: str = "hello", html: str | None = None) -> bytes:
    head = (f"From: Ann Smith <ann@example.org>\r\nTo: bob@example.net\r\nSubject: {subject}\r\n"
            "Date: Tue, 10 Sep 2002 14:20:15 +0200\r\nMessage-ID: <20020910142015.A1@example.org>\r\n"
            "MIME-Version: 1.0\r\n")
    if html is None:
        return (head + "Content-Type: text/plain; charset=us-ascii\r\n\r\n" + body + "\r\n").encode()
    return (head + 'Content-Type: multipart/alternative; boundary="b1"\r\n\r\n'
            "--b1\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n" + body + "\r\n"
            "--b1\r\nContent-Type: text/html; charset=us-ascii\r\n\r\n" + html + "\r\n--b1--\r\n").encode()


def names(body: str, subject: str = "hello", html: str | None = None) -> set[str]:
    return {h.name for h in scan(build(body, subject, html))}


# (rule, (body, subject) that shows the sign, (body, subject) of a close legitimate message)
CASES: list[tuple[str, tuple[str, str], tuple[str, str]]] = [
    ("MGW_SCAM_INCOME_CLAIM",
     ("With our system you can easily make up to $4,500 per week from your kitchen table.", "hi"),
     ("The report says many farm workers earn less than $2 a day; our charity pays $300 per month to each.", "hi")),
    ("MGW_SCAM_MONEY_MAKER",
     ("This is the best money-making system I have seen. Fortunes are being made online.", "hi"),
     ("The museum shows how money was made in the Middle Ages, from minting to printing.", "hi")),
    ("MGW_SCAM_NO_UPFRONT",
     ("Join the program today. No investment needed, no upfront money, just your spare time.", "hi"),
     ("The fund asks for an initial investment of 5,000 euros, payable upfront by the members.", "hi")),
    ("MGW_SCAM_MLM_TERMS",
     ("Reserve your position now and watch your downline grow from the spillover of others.", "hi"),
     ("The line manager will reserve a room for the meeting; the upstream patch is in.", "hi")),
    ("MGW_SCAM_CHAIN_LETTER",
     ("Order all 5 reports listed below. For each report send $5 cash to the person in REPORT #1.", "hi"),
     ("Please read the report #2 of the committee and the reports of the treasurer before Monday.", "hi")),
    ("MGW_SCAM_LEGAL_CLAIM",
     ("Some people think this is a scam, but it is completely legal and this is a legitimate business.", "hi"),
     ("Our lawyer says the contract is legal; the business plan still needs work.", "hi")),
    ("MGW_HELP_WANTED_HOME",
     ("Help wanted. We are a Fortune 500 company looking for home reps in your area.", "hi"),
     ("Help wanted at the bake sale on Saturday: we need people to carry the tables.", "hi")),
    ("MGW_SUBJ_WORK_HOME",
     ("Details inside.", "WORK FROM HOME - REPS NEEDED"),
     ("I will work from home on Friday, call me on my mobile.", "Friday")),
    ("MGW_SUBJ_EARN_AMOUNT",
     ("Details inside.", "Earn $5K in 30 days!"),
     ("Minutes attached.", "Earnings call at 3pm, Q3 revenue $5 million")),
    ("MGW_CAPS_MONEY_SHOUT",
     ("DOES ALL THIS MEAN TO YOU? EASY MONEY!! YOU WILL MAKE A LOT OF MONEY", "hi"),
     ("SAVE ON TRAVEL THIS WEEK! Book now, money back guarantee on all fares.", "hi")),
    ("MGW_BULK_EMAIL_SELLER",
     ("Targeted email marketing works! We send your ad to millions instantly.", "hi"),
     ("Our email list for the choir is out of date, please send me your new address.", "hi")),
    ("MGW_SPAM_LAW_CITED",
     ("This message is sent in compliance with Bill S. 1618 Title III and shall not be considered spam.", "hi"),
     ("The senate bill on farm subsidies was sent back to the committee.", "hi")),
    ("MGW_TAKEN_OFF_LIST",
     ("To be taken off our list, reply to this message.", "hi"),
     ("The old server is to be taken off the rack next week.", "hi")),
    ("MGW_REMOVAL_INSTRUCTIONS",
     ("Removal instructions are at the bottom of this page.", "hi"),
     ("The snow removal crew comes at six; instructions for parking are attached.", "hi")),
    ("MGW_DEAR_TARGET",
     ("Dear Homeowner,\r\n\r\nYour home may qualify for our program.", "hi"),
     ("Dear Homer,\r\n\r\nYour parcel arrived today.", "hi")),
    ("MGW_SUBJ_ATTN",
     ("Details inside.", "Attn: NORTON SYSTEMWORKS CLEARANCE"),
     ("Please pay attention: the meeting moved.", "Meeting moved to room 4")),
    ("MGW_419_SIGNS",
     ("I am Mrs. Sese, widow of the late president. Kindly furnish us your contact. God bless you.", "hi"),
     ("I am glad you came. Kindly regards to your mother, and see you at the bank.", "hi")),
    ("MGW_SUBJ_419",
     ("Details inside.", "URGENT BUSINESS ASSISTANCE"),
     ("Details inside.", "Wired: an urgent business proposition from Nigeria")),
    ("MGW_LENDERS_COMPETE",
     ("Now you can have hundreds of lenders compete for your loan!", "hi"),
     ("The bank lends money to small firms that compete abroad.", "hi")),
    ("MGW_IMPERFECT_CREDIT",
     ("You are eligible even with less than perfect credit.", "hi"),
     ("The author got poor reviews but deserves credit for trying.", "hi")),
    ("MGW_MORTGAGE_PITCH",
     ("Interest rates are at their lowest point in 40 years! Refinance your mortgage today.", "hi"),
     ("Mortgage lending slowed in the third quarter, the central bank said.", "hi")),
    ("MGW_ADULT_SITE",
     ("Hot amateur girls and live sex shows, free xxx pics every day.", "hi"),
     ("# XXX: this kludge should go once the parser handles live data.", "hi")),
    ("MGW_WEBCAM_TEASE",
     ("I just put my webcam on. I'm waiting for you... see you soon baby", "hi"),
     ("My webcam does not work with the new kernel, any ideas?", "hi")),
    ("MGW_TOBACCO_OFFER",
     ("Buy 4 cartons of cigarettes delivered from Spain. Discount tobacco, why pay more?", "hi"),
     ("The tax on tobacco rises in January, the minister said.", "hi")),
    ("MGW_YOUTH_HORMONE",
     ("HGH releasers reverse the effects of aging. Look 10 years younger!", "hi"),
     ("The study looked at aging in mice over ten years.", "hi")),
    ("MGW_NO_DIET",
     ("Lose weight without dieting or exercise! Burn fat while you sleep.", "hi"),
     ("The new diet works if you exercise; sleep also helps.", "hi")),
    ("MGW_GUARANTEED_TO",
     ("Slim down: guaranteed to lose 10-12 lbs in 30 days.", "hi"),
     ("Delivery is guaranteed by Friday; the shoes are guaranteed to fit.", "hi")),
    ("MGW_STOCK_TOUT",
     ("XYZ Corp (OTCBB: XYZQ) is undervalued and should skyrocket to $3.25 a share.", "hi"),
     ("XYZ Corp (OTCBB: XYZQ) reported third-quarter revenue of $4.1 million.", "hi")),
    ("MGW_GET_RICH_COMBO",
     ("Be your own boss! Make $2,000 per week with this money-making system. No experience needed.", "hi"),
     ("Our boss asked us to make the build system faster; experience with make is needed.", "hi")),
]


@pytest.mark.parametrize(("rule", "spam", "ham"), CASES, ids=[c[0] for c in CASES])
def test_rule_hits_spam_and_spares_ham(rule: str, spam: tuple[str, str], ham: tuple[str, str]) -> None:
    assert rule in names(spam[0], spam[1])
    assert rule not in names(ham[0], ham[1])


def test_mailto_remove_subject_in_html() -> None:
    spam_html = '<a href="mailto:list99@example.com?subject=REMOVE">click here to be removed</a>'
    list_html = '<a href="mailto:news-request@example.com?subject=unsubscribe">unsubscribe</a>'
    assert "MGW_MAILTO_SUBJ_REMOVE" in names("Great offer.", html=spam_html)
    assert "MGW_MAILTO_SUBJ_REMOVE" not in names("Weekly news.", html=list_html)
