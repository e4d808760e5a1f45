#!/usr/bin/env python3
"""Writes bench/corpus.jsonl: English prose of our own making (seeded sentence composition), {"text": ...} rows
long enough that batch 4 x seq 256 sees several full batches. Standard library only; deterministic."""
import json, random, pathlib

rng = random.Random(20261123)
subjects = ["The harbour master", "A cartographer from the northern valleys", "The night baker", "An old clockmaker",
            "The ferry pilot", "A retired schoolteacher", "The lighthouse keeper", "A young botanist", "The mayor's clerk",
            "A travelling violinist", "The stonemason", "A weaver of heavy wool"]
verbs = ["noticed", "wrote down", "argued about", "carefully measured", "remembered", "drew a map of", "complained about",
         "quietly repaired", "sold", "traded", "painted", "counted"]
objects = ["the tides that came in twice a day", "the crooked bridge over the river", "the bells of the eastern tower",
           "the price of salt and barley", "a box of letters nobody had opened", "the winter storms", "the old mill wheel",
           "the seeds that arrived by boat", "the routes of the mountain goats", "a broken compass",
           "the market stalls on the square", "the long shadows of the afternoon"]
tails = ["before the first frost.", "while the town slept.", "because nobody else would.", "in a notebook bound with string.",
         "during the spring fair.", "for the third year in a row.", "and told everyone at the inn.", "without asking for payment.",
         "as the ships left the harbour.", "until the lamps were lit.", "with great patience.", "in the shade of the chestnut trees."]
connect = ["Later that week,", "Some said that", "In the records of the town,", "By the end of the season,", "Years afterwards,",
           "On a quiet morning,", "According to the almanac,", "Much to everyone's surprise,"]

def sentence(first=False):
    s = f"{rng.choice(subjects)} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(tails)}"
    if not first and rng.random() < 0.4:
        s = f"{rng.choice(connect)} {s[0].lower()}{s[1:]}"
    return s

rows = []
for i in range(16):
    paras = []
    for p in range(4):
        paras.append(" ".join(sentence(first=(k == 0)) for k in range(7)))
    rows.append({"text": "\n\n".join(paras)})
out = pathlib.Path(__file__).with_name("corpus.jsonl")
out.write_text("".join(json.dumps(r) + "\n" for r in rows))
print(out, len(rows), "rows")
