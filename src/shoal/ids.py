"""IDs and names as Docker makes them: 64 hex digits shown as 12, random two-word names."""

from __future__ import annotations

import random
import secrets

_LEFT = (
    "admiring adoring agitated amazing angry awesome blissful bold boring brave busy charming "
    "clever cool compassionate competent condescending confident cranky crazy dazzling determined "
    "distracted dreamy eager ecstatic elastic elated elegant eloquent epic fervent festive "
    "flamboyant focused friendly frosty gallant gifted goofy gracious happy hardcore heuristic "
    "hopeful hungry infallible inspiring jolly jovial keen kind laughing loving lucid magical "
    "modest musing mystifying naughty nervous nice nifty nostalgic objective optimistic peaceful "
    "pedantic pensive practical priceless quirky quizzical relaxed reverent romantic sad serene "
    "sharp silly sleepy stoic strange stupefied suspicious sweet tender thirsty trusting "
    "unruffled upbeat vibrant vigilant vigorous wizardly wonderful xenodochial youthful zealous zen"
).split()
_RIGHT = (
    "albattani allen almeida archimedes ardinghelli aryabhata austin babbage banach bardeen "
    "bartik bassi bell benz bhabha bhaskara blackwell bohr booth borg bose boyd brahmagupta "
    "brattain brown carson chandrasekhar clarke colden cori cray curie darwin davinci dijkstra "
    "dubinsky easley edison einstein elion engelbart euclid euler fermat fermi feynman franklin "
    "galileo gates goldberg goldstine goldwasser golick goodall hamilton hawking heisenberg "
    "hermann hertz hodgkin hoover hopper hugle hypatia jang jennings jepsen joliot jones kalam "
    "keller kepler khorana kilby kirch knuth lalande lamarr lamport leakey leavitt lewin "
    "lichterman liskov lovelace lumiere mahavira mayer mccarthy mcclintock mclean mcnulty "
    "meitner mendel mestorf minsky mirzakhani morse murdock napier nash neumann newton nobel "
    "noether northcutt noyce panini pare pasteur payne perlman pike poincare poitras ptolemy "
    "raman ramanujan ride ritchie roentgen rosalind saha sammet shamir shannon shaw shirley "
    "shockley sinoussi snyder spence stallman stonebraker swanson swartz swirles tesla thompson "
    "torvalds turing varahamihira visvesvaraya wescoff wiles williams wilson wing wozniak wright "
    "yalow yonath"
).split()


def is_full_id(text: str) -> bool:
    """64 lowercase hex digits, as new_id makes them: the only references that may name a
    directory of their own (anything else of that length could be `../../x/...`)."""
    return len(text) == 64 and all(ch in "0123456789abcdef" for ch in text)


def new_id() -> str:
    """A 64-hex-digit ID; never all digits, so a short form cannot be mistaken for a number."""
    while True:
        value = secrets.token_hex(32)
        if not value[:12].isdigit():
            return value


def short_id(value: str) -> str:
    """The 12-character form Docker prints; strips a `sha256:` prefix."""
    return value.split(":", 1)[-1][:12]


def random_name() -> str:
    return f"{random.choice(_LEFT)}_{random.choice(_RIGHT)}"


_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def new_swarm_id() -> str:
    """swarmkit identity.NewID: 17 random bytes with the top bit set, in base 36, first digit
    dropped, 25 characters (`de179gar9d0o7ltdybungplod`)."""
    raw = bytearray(secrets.token_bytes(17))
    raw[0] |= 0x80
    number = int.from_bytes(raw, "big")
    digits = []
    while number:
        number, rem = divmod(number, 36)
        digits.append(_BASE36[rem])
    text = "".join(reversed(digits))
    return text[1:26]
