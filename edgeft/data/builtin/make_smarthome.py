"""Generate the built-in smart-home voice-command dataset (``smarthome/*.csv``).

The dataset is written by this project, not downloaded: ten intents a smart-home hub hears, each
phrased by combining hand-written templates with slots (rooms, devices, times, songs), then varied
with politeness, fillers, speech-to-text style typos and lowercasing. The output is deterministic
(seeded) and the split is fixed: 40/10/30 train/validation/test per intent, so that every run and
every test sees the same examples (a test split of 300: one example is 0.33 accuracy points).

Regenerate with ``python -m edgeft.data.builtin.make_smarthome`` (a test checks the shipped CSVs
match this script).
"""
from __future__ import annotations

import csv
import random
from pathlib import Path

from edgeft.data.cleaning import normalize

ROOMS = ["kitchen", "living room", "bedroom", "bathroom", "hallway", "office", "garage", "kids room",
         "dining room", "basement", "porch", "guest room"]
SONGS = ["some jazz", "the morning playlist", "taylor swift", "classical music", "lofi beats",
         "my workout mix", "the beatles", "radio one", "something relaxing", "rock music",
         "the latest podcast episode", "coldplay"]
DURATIONS = ["5 minutes", "ten minutes", "half an hour", "90 seconds", "an hour", "25 minutes",
             "2 hours", "three minutes", "45 minutes", "one minute"]
TEMPS = ["21 degrees", "68", "seventy two degrees", "19", "twenty", "23 celsius", "65 fahrenheit",
         "22 degrees", "18 and a half", "74"]
ITEMS = ["milk", "eggs", "paper towels", "coffee beans", "dish soap", "bananas", "bread",
         "batteries", "cat food", "olive oil", "toothpaste", "rice"]
WHEN = ["today", "tomorrow", "this weekend", "tonight", "on saturday", "this afternoon",
        "tomorrow morning", "later", "for the next few days", "on monday"]
CITIES = ["", " in berlin", " in seattle", " here", " outside", " in london", " at home", " in paris"]

TEMPLATES: dict[str, list[str]] = {
    "lights_on": [
        "turn on the lights in the {room}", "switch the {room} lights on", "lights on",
        "can you light up the {room}", "it's too dark in the {room}", "{room} lights on please",
        "illuminate the {room}", "put the lamp on in the {room}", "i need some light in here",
        "brighten the {room}", "turn the {room} lamp on", "power on the ceiling light in the {room}",
    ],
    "lights_off": [
        "turn off the lights in the {room}", "switch the {room} lights off", "lights off",
        "kill the lights in the {room}", "it's too bright in the {room}", "{room} lights off please",
        "shut off the lamp in the {room}", "darken the {room}", "no more light in the {room}",
        "turn the {room} lamp off", "power down the ceiling light in the {room}",
        "lights out in the {room}",
    ],
    "set_temperature": [
        "set the thermostat to {temp}", "make it {temp} in the {room}", "heat the house to {temp}",
        "change the temperature to {temp}", "i'm cold, raise the heat to {temp}",
        "cool the {room} down to {temp}", "thermostat {temp}", "can you warm up the {room}",
        "it's freezing in the {room}", "turn the heating up a bit", "lower the temperature to {temp}",
        "keep the {room} at {temp}",
    ],
    "play_music": [
        "play {song}", "put on {song} in the {room}", "i want to listen to {song}",
        "start playing {song}", "music please", "can you play {song} on the speaker",
        "shuffle {song}", "play {song} in the {room}", "let's hear {song}",
        "turn on some music", "queue up {song}", "resume the music in the {room}",
    ],
    "stop_music": [
        "stop the music", "pause the music in the {room}", "stop playing {song}", "silence please",
        "turn the music off", "pause", "enough music", "can you stop the speaker in the {room}",
        "mute the speaker", "halt the playlist", "stop {song}", "quiet, stop the song",
    ],
    "set_timer": [
        "set a timer for {dur}", "timer {dur}", "start a {dur} timer", "remind me in {dur}",
        "count down {dur}", "can you time {dur} for the pasta", "i need a timer for {dur}",
        "set a kitchen timer for {dur}", "wake me in {dur}", "alert me after {dur}",
        "start counting down from {dur}", "put a timer on for {dur}",
    ],
    "weather": [
        "what's the weather {when}{city}", "will it rain {when}{city}", "do i need an umbrella {when}",
        "how hot will it be {when}{city}", "weather forecast{city}", "is it going to snow {when}",
        "what's the temperature outside", "should i wear a jacket {when}", "is it sunny{city}",
        "how windy is it {when}{city}", "tell me the forecast for {when}", "any storms coming {when}",
    ],
    "lock_door": [
        "lock the front door", "lock the {room} door", "is the door locked? lock it",
        "secure the house", "lock up for the night", "make sure the back door is locked",
        "bolt the garage door", "lock all the doors", "lock the door please", "engage the door lock",
        "close and lock the {room} door", "lock everything up",
    ],
    "add_to_shopping_list": [
        "add {item} to the shopping list", "put {item} on my list", "we need {item}",
        "remember to buy {item}", "add {item} and {item2} to groceries", "we're out of {item}",
        "shopping list: {item}", "don't let me forget {item}", "note down {item} for the store",
        "i have to pick up {item}", "put {item} on the grocery list", "buy {item} next time",
    ],
    "start_vacuum": [
        "start the vacuum", "vacuum the {room}", "clean the floors", "run the robot vacuum",
        "send the roomba to the {room}", "the {room} floor is dirty, clean it", "start cleaning",
        "hoover the {room}", "begin vacuuming {when}", "vacuum the whole house",
        "get the robot to sweep the {room}", "do a quick clean of the {room}",
    ],
}

PREFIXES = ["", "", "", "", "hey hub ", "please ", "could you ", "ok ", "hub, ", "hey, ", "um ",
            "quick one: "]
SUFFIXES = ["", "", "", "", " please", " thanks", " now", " right now", " thank you", " asap",
            " for me", "!"]
N_PER_INTENT = 80
SPLIT = {"train": 40, "validation": 10, "test": 30}


def _typo(text: str, rng: random.Random) -> str:
    """Apply one speech-to-text or keyboard style error to a random word."""
    words = text.split()
    i = rng.randrange(len(words))
    w = words[i]
    if len(w) < 4:
        return text
    kind = rng.choice(["drop", "swap", "double"])
    j = rng.randrange(1, len(w) - 1)
    if kind == "drop":
        w = w[:j] + w[j + 1:]
    elif kind == "swap":
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]
    else:
        w = w[:j] + w[j] + w[j:]
    words[i] = w
    return " ".join(words)


def _fill(template: str, rng: random.Random) -> str:
    item, item2 = rng.sample(ITEMS, 2)
    return template.format(room=rng.choice(ROOMS), song=rng.choice(SONGS), dur=rng.choice(DURATIONS),
                           temp=rng.choice(TEMPS), item=item, item2=item2, when=rng.choice(WHEN),
                           city=rng.choice(CITIES))


def _utterance(template: str, rng: random.Random) -> str:
    text = rng.choice(PREFIXES) + _fill(template, rng) + rng.choice(SUFFIXES)
    if rng.random() < 0.25:
        text = _typo(text, rng)
    if rng.random() < 0.3:
        text = text[0].upper() + text[1:]
    if rng.random() < 0.15:
        text = text + rng.choice(["?", ".", "..."])
    return text


def generate(seed: int = 20261125) -> dict[str, list[tuple[str, str]]]:
    """Return ``{split: [(text, intent), ...]}`` with unique texts across all splits."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[tuple[str, str]]] = {name: [] for name in SPLIT}
    for intent, templates in TEMPLATES.items():
        rows: list[str] = []
        while len(rows) < N_PER_INTENT:
            text = _utterance(rng.choice(templates), rng)
            if normalize(text) not in seen:     # the same rule the cleaning step uses: no leakage
                seen.add(normalize(text))
                rows.append(text)
        start = 0
        for name, n in SPLIT.items():
            splits[name].extend((t, intent) for t in rows[start:start + n])
            start += n
    for rows in splits.values():
        rng.shuffle(rows)
    return splits


def write(out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, rows in generate().items():
        with open(out_dir / f"{name}.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(["text", "intent"])
            writer.writerows(rows)


if __name__ == "__main__":
    write(Path(__file__).parent / "smarthome")
