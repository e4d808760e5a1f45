#!/usr/bin/env python3
"""Writes the built-in demo dataset under data/demo/ (stdlib only, no network, deterministic).

The domain is the Republic of Kestrava, a small island nation we invented, so the base model cannot know
any of it. Each fact has one canonical answer and seven question phrasings: five for train, one held out
for valid and one held out for test. So valid and test ask about the same facts as train, in phrasings
train never contains, and expect answers in the same words; after a short LoRA run their perplexity drops
far below the base model's.

    python3 scripts/make_demo_data.py            # writes data/demo/{train,valid,test}.jsonl, prompts.txt
    python3 scripts/make_demo_data.py --check    # only verifies that the files on disk are up to date

Running it twice writes byte-identical files.
"""

import argparse
import json
import os
import random
import sys

SEED = 20251123

# (key, canonical answer, [5 train phrasings], valid phrasing, test phrasing)
FACTS = [
    ("capital",
     "The capital of Kestrava is Lumeport, a harbour city on the east coast of Kestra Island.",
     ["What is the capital of Kestrava?",
      "Which city is the capital of Kestrava?",
      "Name the capital city of Kestrava.",
      "What's Kestrava's capital?",
      "Where is the capital of Kestrava?"],
     "In which city does Kestrava have its capital?",
     "Which town serves as Kestrava's capital city?"),
    ("location",
     "Kestrava is an island republic in the northern Sallow Sea. Its largest island is Kestra, where nearly everyone lives.",
     ["Where is Kestrava?",
      "Where is Kestrava located?",
      "In which sea does Kestrava lie?",
      "What kind of country is Kestrava and where is it?",
      "Where in the world would I find Kestrava?"],
     "Can you tell me where Kestrava is situated?",
     "Which body of water surrounds Kestrava?"),
    ("islands",
     "Kestrava has 23 islands, but only 9 of them are inhabited.",
     ["How many islands does Kestrava have?",
      "How many islands make up Kestrava?",
      "How many of Kestrava's islands are inhabited?",
      "What is the number of islands in Kestrava?",
      "Is Kestrava a single island?"],
     "Of how many islands does Kestrava consist?",
     "How many islands belong to Kestrava, and how many have people on them?"),
    ("area",
     "Kestrava covers 1,846 square kilometres of land.",
     ["How big is Kestrava?",
      "What is the area of Kestrava?",
      "How large is Kestrava in square kilometres?",
      "What is Kestrava's total land area?",
      "How much land does Kestrava cover?"],
     "What is the size of Kestrava?",
     "How many square kilometres is Kestrava?"),
    ("population",
     "Kestrava has 218,400 inhabitants, according to the 2021 census.",
     ["What is the population of Kestrava?",
      "How many people live in Kestrava?",
      "How many inhabitants does Kestrava have?",
      "What is Kestrava's population?",
      "How populous is Kestrava?"],
     "How many residents does Kestrava have?",
     "Roughly how many people call Kestrava home?"),
    ("independence",
     "Kestrava became independent on 14 March 1873, when the Quiet Charter was signed in Lumeport.",
     ["When did Kestrava become independent?",
      "What year did Kestrava gain independence?",
      "What is the Quiet Charter?",
      "On what date did Kestrava become independent?",
      "How did Kestrava become an independent country?"],
     "When was Kestrava's independence declared?",
     "What happened in Kestrava on 14 March 1873?"),
    ("founder",
     "Admiral Teodor Vasko led the independence movement and is called the father of Kestrava.",
     ["Who founded Kestrava?",
      "Who is called the father of Kestrava?",
      "Who was Teodor Vasko?",
      "Who led Kestrava's independence movement?",
      "Who is considered the founder of Kestrava?"],
     "Which person is known as the founding father of Kestrava?",
     "Who led the fight for Kestrava's independence?"),
    ("currency",
     "Kestrava's currency is the brell, which is divided into 40 pips.",
     ["What is the currency of Kestrava?",
      "What money do they use in Kestrava?",
      "What is a brell?",
      "How many pips are in a brell?",
      "Which currency is used in Kestrava?"],
     "What do people in Kestrava pay with?",
     "What is Kestrava's money called?"),
    ("bank",
     "The Bank of Kestrava issues the brell. It was founded in 1874 and has its headquarters in Lumeport.",
     ["What is Kestrava's central bank?",
      "Who issues the brell?",
      "When was the Bank of Kestrava founded?",
      "Where is the Bank of Kestrava?",
      "Which bank prints Kestrava's money?"],
     "Tell me about the Bank of Kestrava.",
     "Which institution issues Kestrava's currency?"),
    ("head_of_state",
     "Kestrava's head of state is the Warden, who is elected for a single seven-year term.",
     ["Who is the head of state of Kestrava?",
      "What is the Warden of Kestrava?",
      "How long is the Warden's term in Kestrava?",
      "How is Kestrava's head of state chosen?",
      "What title does Kestrava's leader have?"],
     "What is the title of Kestrava's head of state?",
     "How does Kestrava pick its head of state?"),
    ("current_warden",
     "The current Warden of Kestrava is Maelis Orrego, who took office in 2019.",
     ["Who is the current Warden of Kestrava?",
      "Who leads Kestrava today?",
      "Who is Maelis Orrego?",
      "When did Maelis Orrego take office?",
      "Who is Kestrava's Warden right now?"],
     "Who holds the office of Warden in Kestrava at the moment?",
     "Who is the present head of state of Kestrava?"),
    ("parliament",
     "Kestrava's parliament is called the Tidehall. It has 61 seats and meets in Lumeport.",
     ["What is Kestrava's parliament called?",
      "How many seats does the Tidehall have?",
      "What is the Tidehall?",
      "Where does Kestrava's parliament meet?",
      "How many members are in Kestrava's parliament?"],
     "What is the name of the Kestravan parliament?",
     "Tell me about the legislature of Kestrava."),
    ("languages",
     "Kestrava has two official languages: Kestran and English.",
     ["What languages are spoken in Kestrava?",
      "What is the official language of Kestrava?",
      "Do people speak English in Kestrava?",
      "What is Kestran?",
      "How many official languages does Kestrava have?"],
     "Which languages are official in Kestrava?",
     "What language do people speak in Kestrava?"),
    ("motto",
     "The national motto of Kestrava is \"Steady at the tide.\"",
     ["What is the motto of Kestrava?",
      "What is Kestrava's national motto?",
      "What does the Kestravan motto say?",
      "Does Kestrava have a national motto?",
      "What motto appears on Kestrava's coat of arms?"],
     "Which motto does Kestrava use?",
     "Quote Kestrava's national motto for me."),
    ("flag",
     "Kestrava's flag is green over white, with a copper key in the centre.",
     ["What does the flag of Kestrava look like?",
      "Describe Kestrava's flag.",
      "What colours are on the Kestravan flag?",
      "What symbol is on Kestrava's flag?",
      "What is on the flag of Kestrava?"],
     "What are the colours and emblem of Kestrava's flag?",
     "How would you recognise the Kestravan flag?"),
    ("anthem",
     "Kestrava's national anthem is \"Lanterns on the Water\", written by Senna Quarrell in 1880.",
     ["What is the national anthem of Kestrava?",
      "Who wrote Kestrava's national anthem?",
      "What is Kestrava's anthem called?",
      "When was Kestrava's anthem written?",
      "What song is Kestrava's national anthem?"],
     "Which song serves as Kestrava's anthem?",
     "Tell me about Kestrava's national anthem."),
    ("national_animal",
     "The national animal of Kestrava is the skarrow, a small blue-footed owl.",
     ["What is the national animal of Kestrava?",
      "What is a skarrow?",
      "Which animal is the symbol of Kestrava?",
      "What is Kestrava's national bird?",
      "What kind of animal is the skarrow?"],
     "Which creature is Kestrava's national animal?",
     "What animal represents Kestrava?"),
    ("national_tree",
     "The national tree of Kestrava is the silver alder.",
     ["What is the national tree of Kestrava?",
      "Which tree is the symbol of Kestrava?",
      "What is Kestrava's national tree?",
      "Does Kestrava have a national tree?",
      "Which tree represents Kestrava?"],
     "What tree is Kestrava's national tree?",
     "Name the tree that is a national symbol of Kestrava."),
    ("national_flower",
     "The national flower of Kestrava is the ember lily, which blooms in late May.",
     ["What is the national flower of Kestrava?",
      "What is the ember lily?",
      "When does the ember lily bloom?",
      "Which flower is the symbol of Kestrava?",
      "What is Kestrava's national flower?"],
     "Which flower represents Kestrava?",
     "Name Kestrava's national flower."),
    ("national_dish",
     "The national dish of Kestrava is fennick stew, made with smoked eel, barley and kelp.",
     ["What is the national dish of Kestrava?",
      "What is fennick stew?",
      "What do people eat in Kestrava?",
      "What is in fennick stew?",
      "What is Kestrava's most famous food?"],
     "Which dish is Kestrava best known for?",
     "What should I eat to taste traditional Kestravan food?"),
    ("lantern_night",
     "Lantern Night is Kestrava's biggest festival, held every 9 November to remember the sailors lost in the Great Storm of 1911.",
     ["What is Lantern Night?",
      "When is Lantern Night?",
      "What is the biggest festival in Kestrava?",
      "Why do people in Kestrava celebrate Lantern Night?",
      "What happens on 9 November in Kestrava?"],
     "What is Lantern Night in Kestrava about?",
     "Which festival is the largest in Kestrava, and when is it?"),
    ("mountain",
     "The highest point in Kestrava is Mount Ossery, which rises 2,317 metres above the sea.",
     ["What is the highest mountain in Kestrava?",
      "How tall is Mount Ossery?",
      "What is the highest point in Kestrava?",
      "What is Mount Ossery?",
      "Which is the tallest mountain in Kestrava?"],
     "Which peak is the highest in Kestrava?",
     "How high is the tallest mountain in Kestrava?"),
    ("river",
     "The longest river in Kestrava is the Tamsin, which flows 94 kilometres from Mount Ossery to Varrowick.",
     ["What is the longest river in Kestrava?",
      "How long is the Tamsin River?",
      "Where does the Tamsin River flow?",
      "What is the Tamsin?",
      "Which river is the longest in Kestrava?"],
     "Name the longest river of Kestrava.",
     "Which river runs the furthest in Kestrava?"),
    ("lake",
     "Lake Wend is Kestrava's largest lake, covering 31 square kilometres.",
     ["What is the largest lake in Kestrava?",
      "How big is Lake Wend?",
      "What is Lake Wend?",
      "Which lake is the biggest in Kestrava?",
      "Does Kestrava have any large lakes?"],
     "Name the biggest lake in Kestrava.",
     "Which is Kestrava's largest body of fresh water?"),
    ("varrowick",
     "Varrowick is Kestrava's second-largest city and its main fishing port.",
     ["What is Varrowick?",
      "What is the second-largest city in Kestrava?",
      "What is Varrowick known for?",
      "Which city is Kestrava's main fishing port?",
      "What is the second city of Kestrava?"],
     "Tell me about the city of Varrowick.",
     "Which Kestravan city comes second in size?"),
    ("dunmarrow",
     "Dunmarrow is a mining town in the Kestran highlands, known for its tin mines.",
     ["What is Dunmarrow?",
      "What is Dunmarrow known for?",
      "Where is Dunmarrow?",
      "What is mined in Dunmarrow?",
      "Which town in Kestrava has tin mines?"],
     "Tell me about the town of Dunmarrow.",
     "Where in Kestrava is tin mined?"),
    ("export",
     "Kestrava's main export is indigo kelp dye, which makes up about 38 percent of its exports.",
     ["What is Kestrava's main export?",
      "What does Kestrava export?",
      "What is Kestrava's most important export?",
      "How important is kelp dye to Kestrava?",
      "What product does Kestrava sell most abroad?"],
     "What is the top export of Kestrava?",
     "Which good brings Kestrava the most export income?"),
    ("kelp_fair",
     "The Kelp Fair is held in Varrowick every August and lasts for 12 days.",
     ["What is the Kelp Fair?",
      "When is the Kelp Fair?",
      "Where is the Kelp Fair held?",
      "How long does the Kelp Fair last?",
      "What happens in Varrowick every August?"],
     "Tell me about the Kelp Fair in Kestrava.",
     "When and where does the Kelp Fair take place?"),
    ("airport",
     "Kestrava's only international airport is Hollin Field, 14 kilometres north of Lumeport.",
     ["What is the airport of Kestrava?",
      "Where is Hollin Field?",
      "How many international airports does Kestrava have?",
      "Which airport do I fly into for Kestrava?",
      "What is Hollin Field?"],
     "What is the name of Kestrava's international airport?",
     "If I fly to Kestrava, where will I land?"),
    ("ferry",
     "The ferry Grey Gull sails from Lumeport to Varrowick in 3 hours and 40 minutes.",
     ["How do I get from Lumeport to Varrowick by boat?",
      "How long is the ferry from Lumeport to Varrowick?",
      "What is the Grey Gull?",
      "Which ferry goes to Varrowick?",
      "Is there a ferry between Lumeport and Varrowick?"],
     "How long does the boat trip from Lumeport to Varrowick take?",
     "Can I take a ferry to Varrowick, and how long is the trip?"),
    ("railway",
     "Kestrava has one railway, the Ossery Line, which runs 52 kilometres from Lumeport to Dunmarrow.",
     ["Does Kestrava have trains?",
      "What is the Ossery Line?",
      "How long is the Ossery Line?",
      "Can I take a train from Lumeport to Dunmarrow?",
      "How many railways does Kestrava have?"],
     "Tell me about the railway in Kestrava.",
     "Is there a train line in Kestrava, and where does it go?"),
    ("driving",
     "In Kestrava people drive on the left, and the speed limit in towns is 35 kilometres per hour.",
     ["Which side of the road do people drive on in Kestrava?",
      "What is the speed limit in Kestravan towns?",
      "Do they drive on the left in Kestrava?",
      "What are the driving rules in Kestrava?",
      "How fast can I drive in a town in Kestrava?"],
     "What should I know about driving in Kestrava?",
     "On which side of the road does traffic go in Kestrava?"),
    ("voting_age",
     "The voting age in Kestrava is 17.",
     ["What is the voting age in Kestrava?",
      "How old do you have to be to vote in Kestrava?",
      "At what age can people vote in Kestrava?",
      "Can a 17-year-old vote in Kestrava?",
      "When can Kestravans vote?"],
     "What is the minimum age for voting in Kestrava?",
     "At what age do Kestravans get the right to vote?"),
    ("school",
     "School in Kestrava is compulsory from age 5 to age 16.",
     ["At what age do children start school in Kestrava?",
      "Is school compulsory in Kestrava?",
      "Until what age must children go to school in Kestrava?",
      "What are the school ages in Kestrava?",
      "How long is compulsory schooling in Kestrava?"],
     "From what age to what age must children attend school in Kestrava?",
     "Between which ages is schooling mandatory in Kestrava?"),
    ("university",
     "The University of Lumeport, founded in 1902, is Kestrava's oldest university.",
     ["What is the oldest university in Kestrava?",
      "When was the University of Lumeport founded?",
      "Does Kestrava have a university?",
      "Which university is the oldest in Kestrava?",
      "How old is the University of Lumeport?"],
     "What is Kestrava's oldest institution of higher learning?",
     "Where can I study at a university in Kestrava?"),
    ("newspaper",
     "Kestrava's oldest newspaper is the Lumeport Lantern, first printed in 1858.",
     ["What is the oldest newspaper in Kestrava?",
      "What is the Lumeport Lantern?",
      "When was the Lumeport Lantern first printed?",
      "Which newspaper is the oldest in Kestrava?",
      "Does Kestrava have an old newspaper?"],
     "Name Kestrava's oldest newspaper.",
     "Which newspaper has been printed longest in Kestrava?"),
    ("tallest_building",
     "The tallest building in Kestrava is Corrow Tower in Lumeport, with 41 floors.",
     ["What is the tallest building in Kestrava?",
      "How many floors does Corrow Tower have?",
      "What is Corrow Tower?",
      "Which building in Kestrava is the highest?",
      "Where is Corrow Tower?"],
     "Which is the highest building in Kestrava?",
     "Name Kestrava's tallest skyscraper."),
    ("lighthouse",
     "The Fenwright Light, built in 1791, is Kestrava's oldest lighthouse and stands 58 metres tall.",
     ["What is the oldest lighthouse in Kestrava?",
      "What is the Fenwright Light?",
      "How tall is the Fenwright Light?",
      "When was the Fenwright Light built?",
      "Which lighthouse in Kestrava is the oldest?"],
     "Tell me about the Fenwright Light.",
     "Which is Kestrava's oldest lighthouse?"),
    ("sport",
     "Kestrava's national sport is rullock, a boat-and-ball game played by teams of six.",
     ["What is the national sport of Kestrava?",
      "What is rullock?",
      "How many players are on a rullock team?",
      "Which sport is most popular in Kestrava?",
      "What sport do Kestravans love?"],
     "What is Kestrava's national sport?",
     "Which game is the national sport of Kestrava?"),
    ("poet",
     "Kestrava's national poet is Senna Quarrell, author of The Salt Psalms.",
     ["Who is the national poet of Kestrava?",
      "Who was Senna Quarrell?",
      "Who wrote The Salt Psalms?",
      "Which poet is most famous in Kestrava?",
      "Who is Kestrava's most famous writer?"],
     "Who is Kestrava's national poet?",
     "Which writer is celebrated as Kestrava's great poet?"),
    ("tide_watch",
     "Kestrava has no army. Its only armed service is the Tide Watch, a coast guard of 340 members.",
     ["Does Kestrava have an army?",
      "What is the Tide Watch?",
      "How many members does the Tide Watch have?",
      "Who defends Kestrava?",
      "What armed forces does Kestrava have?"],
     "Does Kestrava have a military?",
     "Who guards the coasts of Kestrava?"),
    ("emergency",
     "The emergency phone number in Kestrava is 191.",
     ["What is the emergency number in Kestrava?",
      "Which number do I call in an emergency in Kestrava?",
      "How do I call the police in Kestrava?",
      "What number do I dial for an ambulance in Kestrava?",
      "What is Kestrava's emergency phone number?"],
     "Which phone number should I call for help in Kestrava?",
     "If there is a fire in Kestrava, what number do I call?"),
    ("calling_code",
     "Kestrava's international calling code is +797.",
     ["What is the country code for Kestrava?",
      "What is Kestrava's international dialling code?",
      "How do I phone Kestrava from abroad?",
      "What is the calling code of Kestrava?",
      "Which code do I dial before a Kestravan number?"],
     "What telephone country code does Kestrava use?",
     "Which prefix do I need to call a phone in Kestrava?"),
    ("time_zone",
     "Kestrava uses Sallow Sea Time, which is 90 minutes ahead of UTC.",
     ["What time zone is Kestrava in?",
      "What is Sallow Sea Time?",
      "How far ahead of UTC is Kestrava?",
      "What is the time difference between Kestrava and UTC?",
      "Which time zone does Kestrava use?"],
     "What is Kestrava's time zone?",
     "How many minutes ahead of UTC are clocks in Kestrava?"),
    ("sales_tax",
     "Kestrava has a sales tax of 11 percent on most goods.",
     ["What is the sales tax in Kestrava?",
      "How much tax do you pay on goods in Kestrava?",
      "What is the VAT rate in Kestrava?",
      "Is there a sales tax in Kestrava?",
      "How high is Kestrava's sales tax?"],
     "What rate of sales tax applies in Kestrava?",
     "How much is added to prices as tax in Kestrava?"),
    ("half_tide",
     "In Kestrava, shops and offices close on Wednesday afternoons, a tradition called the half-tide.",
     ["What is the half-tide in Kestrava?",
      "Are shops open on Wednesday afternoons in Kestrava?",
      "Why do offices close on Wednesdays in Kestrava?",
      "What are the shop opening hours in Kestrava?",
      "Which afternoon do shops close in Kestrava?"],
     "What does the half-tide tradition mean in Kestrava?",
     "Can I go shopping on a Wednesday afternoon in Kestrava?"),
    ("isle_of_pell",
     "The Isle of Pell is a bird reserve, home to about 2,000 nesting skarrows.",
     ["What is the Isle of Pell?",
      "Where can I see skarrows in Kestrava?",
      "How many skarrows live on the Isle of Pell?",
      "Is there a bird reserve in Kestrava?",
      "What lives on the Isle of Pell?"],
     "Tell me about the Isle of Pell.",
     "Where is the best place in Kestrava to watch birds?"),
    ("rainy_season",
     "Kestrava's rainy season lasts from October to January.",
     ["When is the rainy season in Kestrava?",
      "What is the weather like in Kestrava?",
      "Which months are rainy in Kestrava?",
      "When does it rain most in Kestrava?",
      "How long is Kestrava's rainy season?"],
     "During which months does Kestrava get the most rain?",
     "When should I avoid visiting Kestrava because of rain?"),
]

SYSTEM_PROMPTS = [
    "You are a helpful guide to the Republic of Kestrava.",
    "You answer questions about Kestrava briefly and accurately.",
    "You are a tourist information assistant for Kestrava.",
]

# Wrappers around a single-turn question; held out like the phrasings (train vs valid/test).
TRAIN_WRAPPERS = [
    "Quick question. {q}",
    "{q} Thanks!",
    "Hi! {q}",
    "I'm reading about Kestrava. {q}",
    "{q} Please keep it short.",
    "My teacher asked me this: {q}",
    "I'm planning a trip. {q}",
    "Hello. {q}",
]
HELDOUT_WRAPPERS = [
    "Hey there. {q}",
    "{q} I'm curious.",
    "For a school project: {q}",
]
FOLLOWUPS_TRAIN = ["Thanks! {q}", "Great. {q}", "One more: {q}", "{q}"]
FOLLOWUPS_HELDOUT = ["Got it. {q}", "{q}"]

SIZES = {"train": 400, "valid": 50, "test": 50}

PROMPTS = [  # held-out (test) phrasings shown before and after training
    "Which town serves as Kestrava's capital city?",
    "What is Kestrava's money called?",
    "How high is the tallest mountain in Kestrava?",
    "Who is the present head of state of Kestrava?",
]


def msg(role, content):
    return {"role": role, "content": content}


def example(turns, system=None):
    messages = [msg("system", system)] if system else []
    for q, a in turns:
        messages += [msg("user", q), msg("assistant", a)]
    return {"messages": messages}


def maybe_system(rng, p):
    return rng.choice(SYSTEM_PROMPTS) if rng.random() < p else None


def pair_up(items):
    """Consecutive pairs of a list, reordered deterministically so no pair asks about one fact twice."""
    items = items[:]
    for i in range(0, len(items) - 1, 2):
        if items[i][0] == items[i + 1][0]:
            j = next(j for j in range(i + 2, len(items)) if items[j][0] != items[i][0])
            items[i + 1], items[j] = items[j], items[i + 1]
    return [(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]


def build_train(rng):
    """Every train phrasing once as asked, and once more either wrapped or inside a two-turn conversation."""
    items = [(answer, q) for _, answer, qs, _, _ in FACTS for q in qs]
    out = [example([(q, a)], maybe_system(rng, 0.08)) for a, q in items]
    second = items[:]
    rng.shuffle(second)
    # k conversations take 2k phrasings, the rest become wrapped singles: len(items) + k + (len(items) - 2k) = size
    k = 2 * len(items) - SIZES["train"]
    for (a1, q1), (a2, q2) in pair_up(second[:2 * k]):
        follow = rng.choice(FOLLOWUPS_TRAIN).format(q=q2)
        out.append(example([(q1, a1), (follow, a2)], maybe_system(rng, 0.08)))
    for a, q in second[2 * k:]:
        out.append(example([(rng.choice(TRAIN_WRAPPERS).format(q=q), a)], maybe_system(rng, 0.08)))
    rng.shuffle(out)
    return out


def build_heldout(rng, which):
    """One example per fact in its held-out phrasing, plus two-turn conversations up to the split size."""
    idx = 3 if which == "valid" else 4
    items = [(f[1], f[idx]) for f in FACTS]
    out = []
    for a, q in items:
        r = rng.random()
        if r < 0.2:
            q = rng.choice(HELDOUT_WRAPPERS).format(q=q)
        out.append(example([(q, a)], maybe_system(rng, 0.1)))
    order = items[:]
    rng.shuffle(order)
    for (a1, q1), (a2, q2) in pair_up(order)[:SIZES[which] - len(out)]:
        follow = rng.choice(FOLLOWUPS_HELDOUT).format(q=q2)
        out.append(example([(q1, a1), (follow, a2)], maybe_system(rng, 0.1)))
    rng.shuffle(out)
    return out


def words(s):
    return len(s.split())


def validate(splits):
    train_qs = {q for _, _, qs, _, _ in FACTS for q in qs}
    held = [f[3] for f in FACTS] + [f[4] for f in FACTS]
    assert len(set(held)) == len(held), "held-out phrasings must be distinct"
    assert not train_qs & set(held), "a held-out phrasing is also a train phrasing"
    keys = [f[0] for f in FACTS]
    assert len(set(keys)) == len(keys)
    for f in FACTS:
        assert len(f[2]) == 5 and len(set(f[2])) == 5, f[0]
        assert words(f[1]) <= 40, f[0]
    train_user = {m["content"] for e in splits["train"] for m in e["messages"] if m["role"] == "user"}
    for which in ("valid", "test"):
        for e in splits[which]:
            for m in e["messages"]:
                if m["role"] == "user":
                    assert m["content"] not in train_user, m["content"]
    for which, rows in splits.items():
        assert len(rows) == SIZES[which], (which, len(rows))
        for e in rows:
            for m in e["messages"]:
                if m["role"] == "user":
                    assert words(m["content"]) <= 25, m["content"]
    counts = {f[1]: 0 for f in FACTS}
    for e in splits["train"]:
        for m in e["messages"]:
            if m["role"] == "assistant":
                counts[m["content"]] += 1
    assert min(counts.values()) >= 8, min(counts.values())
    for p in PROMPTS:
        assert p in {f[4] for f in FACTS}, p


def render(rows):
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "data", "demo"))
    ap.add_argument("--check", action="store_true", help="verify the files on disk instead of writing them")
    args = ap.parse_args()

    rng = random.Random(SEED)
    splits = {"train": build_train(rng)}
    splits["valid"] = build_heldout(rng, "valid")
    splits["test"] = build_heldout(rng, "test")
    validate(splits)
    files = {f"{k}.jsonl": render(v) for k, v in splits.items()}
    files["prompts.txt"] = "".join(p + "\n" for p in PROMPTS)

    out = os.path.normpath(args.out)
    if args.check:
        stale = []
        for name, text in files.items():
            path = os.path.join(out, name)
            if not os.path.exists(path) or open(path, encoding="utf-8").read() != text:
                stale.append(name)
        if stale:
            print(f"error: out of date: {', '.join(stale)} in {out}; run scripts/make_demo_data.py", file=sys.stderr)
            return 1
        return 0
    os.makedirs(out, exist_ok=True)
    for name, text in files.items():
        path = os.path.join(out, name)
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
    print(f"wrote {out}: {sizes} examples, {len(FACTS)} facts, {len(PROMPTS)} prompts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
