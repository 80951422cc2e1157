"""Write the bundled sample datasets: sft.jsonl, dpo.jsonl and rm.jsonl (the released schemas).

Each instruction gets three system messages in three different, easy-to-see response styles (one sentence,
a bulleted list, a JSON object, a numbered list, a beginner-friendly explanation, an all-caps cheer). The
responses are written from the same facts in that style, so a tiny model trained on them shows progress by
following the system message. Pairs: chosen = the response to the row's own system message, rejected = the
response written for another system message of the same instruction.

Deterministic: `python data/samples/make_samples.py` rewrites identical files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parent
SEED = 2024
SOURCE = "janus-jax-samples"

# (instruction, one-sentence answer, three key points, everyday comparison)
TOPICS = [
    (
        "What is photosynthesis?",
        "Photosynthesis is how plants turn light, water and carbon dioxide into sugar and oxygen.",
        [
            "It happens in chloroplasts",
            "Chlorophyll captures the light",
            "Oxygen is released as a by-product",
        ],
        "a leaf works like a tiny solar-powered kitchen that cooks sugar from air and water",
    ),
    (
        "Why is the sky blue?",
        "The sky looks blue because air molecules scatter short blue wavelengths of sunlight the most.",
        [
            "Sunlight contains all colors",
            "Shorter wavelengths scatter more",
            "At sunset light travels farther, so red remains",
        ],
        "the air acts like a sieve that bounces blue light around the whole sky",
    ),
    (
        "How does a vaccine work?",
        "A vaccine trains the immune system to recognize a germ without causing the disease.",
        [
            "It shows the body a harmless piece of the germ",
            "The body makes antibodies and memory cells",
            "A later infection is fought off faster",
        ],
        "it is like a fire drill that prepares the body before a real fire",
    ),
    (
        "What is inflation?",
        "Inflation is the general rise in prices that lowers what each unit of money can buy.",
        [
            "It is measured with price indexes",
            "Central banks target a low, steady rate",
            "Savings lose value when it is high",
        ],
        "your pocket money buys fewer sweets each year even though the sweets did not change",
    ),
    (
        "What causes the seasons?",
        "Seasons happen because Earth's axis is tilted, so each hemisphere gets more direct sunlight part of the year.",
        [
            "The tilt is about 23.5 degrees",
            "Direct sunlight heats more strongly",
            "Distance to the Sun is not the cause",
        ],
        "tilting a flashlight spreads its light thin, tilting it straight concentrates it",
    ),
    (
        "What is a black hole?",
        "A black hole is a region where gravity is so strong that nothing, not even light, can escape.",
        [
            "It forms when a massive star collapses",
            "Its boundary is the event horizon",
            "It bends light and time around it",
        ],
        "it is like a drain in space that everything nearby can fall into but never climb out of",
    ),
    (
        "How do I boil an egg?",
        "Put the egg in boiling water for about nine minutes, then cool it in cold water.",
        [
            "Lower the egg gently into the pot",
            "Six minutes gives a soft yolk, nine a firm one",
            "Cold water stops the cooking",
        ],
        "cooking an egg is like baking bread: time decides how set the inside gets",
    ),
    (
        "What is machine learning?",
        "Machine learning is teaching computers to find patterns in data instead of following hand-written rules.",
        [
            "A model learns from examples",
            "It is tested on data it has not seen",
            "More and better data usually helps",
        ],
        "it is like learning to recognize dogs by seeing many dogs rather than reading a definition",
    ),
    (
        "What is a prime number?",
        "A prime number is a whole number greater than one whose only divisors are one and itself.",
        [
            "2, 3, 5 and 7 are primes",
            "2 is the only even prime",
            "Every whole number above one factors into primes",
        ],
        "primes are like atoms: every number is built by multiplying them together",
    ),
    (
        "Why do we sleep?",
        "We sleep so the body and brain can repair themselves and store memories.",
        ["Deep sleep restores the body", "Dream sleep helps memory", "Adults need about seven to nine hours"],
        "sleep is like a nightly maintenance crew that cleans and files everything from the day",
    ),
    (
        "How does a refrigerator keep food cold?",
        "A refrigerator pumps heat out of its inside by evaporating and compressing a refrigerant.",
        [
            "The refrigerant absorbs heat as it evaporates",
            "A compressor squeezes it back into a liquid",
            "The heat leaves through coils at the back",
        ],
        "it is like a sponge that soaks up heat inside and wrings it out behind the fridge",
    ),
    (
        "What is DNA?",
        "DNA is the molecule that stores the genetic instructions for building and running living things.",
        [
            "It is shaped like a double helix",
            "Its code uses four bases: A, T, C and G",
            "Genes are sections of DNA",
        ],
        "DNA is a recipe book that every cell carries",
    ),
    (
        "What is the water cycle?",
        "The water cycle is the endless movement of water through evaporation, condensation and precipitation.",
        [
            "The Sun evaporates water",
            "Vapor condenses into clouds",
            "Rain and snow return water to the ground",
        ],
        "it is like a pot with a lid, where steam collects and drips back down",
    ),
    (
        "How do airplanes fly?",
        "Airplanes fly because their wings push air down, which creates an upward lift force.",
        [
            "Wings are shaped and angled to deflect air",
            "Engines provide forward thrust",
            "Lift must beat the plane's weight",
        ],
        "it is like feeling your hand rise when you tilt it out of a moving car window",
    ),
    (
        "What is a recession?",
        "A recession is a significant, widespread decline in economic activity lasting months.",
        ["Output and spending fall", "Unemployment usually rises", "Governments may cut rates or spend more"],
        "it is like a town where shops get fewer customers, so they hire fewer people, so people spend less",
    ),
    (
        "What is an API?",
        "An API is a defined way for one program to request data or actions from another.",
        ["It lists the allowed requests", "It hides the internal details", "Web APIs often exchange JSON"],
        "an API is like a restaurant menu: you order what is listed without entering the kitchen",
    ),
    (
        "How do I make a good password?",
        "Use a long, unique passphrase for each account and store it in a password manager.",
        [
            "Length matters more than odd symbols",
            "Never reuse a password",
            "Turn on two-factor authentication",
        ],
        "a password is a house key, and reusing it means one lost key opens every door",
    ),
    (
        "What is gravity?",
        "Gravity is the attraction between masses that keeps us on Earth and planets in orbit.",
        [
            "More mass means stronger pull",
            "It weakens with distance",
            "Einstein described it as curved spacetime",
        ],
        "it is like a heavy ball on a trampoline that makes smaller balls roll toward it",
    ),
    (
        "What is a volcano?",
        "A volcano is an opening in Earth's crust where molten rock, ash and gas escape.",
        [
            "Magma rises from below the crust",
            "Pressure builds until it erupts",
            "Many sit where tectonic plates meet",
        ],
        "it is like a shaken soda bottle that finally pops its cap",
    ),
    (
        "What does a CPU do?",
        "A CPU executes a program's instructions, doing the arithmetic and decisions of a computer.",
        [
            "It fetches, decodes and executes instructions",
            "Its speed is measured in gigahertz",
            "Modern CPUs have several cores",
        ],
        "the CPU is the chef of the computer, following the recipe one step at a time",
    ),
    (
        "Why do leaves change color in autumn?",
        "Leaves change color because trees stop making green chlorophyll, revealing yellow and red pigments.",
        [
            "Shorter days trigger the change",
            "Yellow pigments were there all along",
            "Red comes from new pigments made in autumn",
        ],
        "it is like peeling off a green sticker to show the colors printed underneath",
    ),
    (
        "What is compound interest?",
        "Compound interest is interest earned on both your original money and the interest already added.",
        [
            "Growth speeds up over time",
            "Frequent compounding adds a little more",
            "Starting early matters most",
        ],
        "it is like a snowball that picks up more snow the bigger it gets",
    ),
    (
        "How do I start running?",
        "Start with short run-walk sessions three times a week and increase the time slowly.",
        [
            "Alternate one minute running with two walking",
            "Add no more than ten percent per week",
            "Rest days prevent injury",
        ],
        "building up running is like climbing stairs one step at a time instead of jumping to the top",
    ),
    (
        "What is an atom?",
        "An atom is the smallest unit of a chemical element, made of a nucleus and electrons.",
        [
            "The nucleus holds protons and neutrons",
            "Electrons move around the nucleus",
            "The proton count defines the element",
        ],
        "an atom is like a tiny solar system with a heavy center and light things around it",
    ),
    (
        "What is climate change?",
        "Climate change is the long-term warming of Earth driven mainly by greenhouse gases from human activity.",
        [
            "Burning fossil fuels releases carbon dioxide",
            "The gases trap heat",
            "Effects include rising seas and extreme weather",
        ],
        "greenhouse gases act like an extra blanket on a bed that keeps getting thicker",
    ),
    (
        "How does the internet work?",
        "The internet is a global network of computers that exchange data in small packets using shared protocols.",
        [
            "Data is split into packets",
            "Routers forward packets toward their destination",
            "Protocols like TCP/IP set the rules",
        ],
        "it is like a postal system that splits a letter into postcards and reassembles them at the end",
    ),
    (
        "What is a noun?",
        "A noun is a word that names a person, place, thing or idea.",
        [
            "Examples: teacher, Paris, chair, freedom",
            "Proper nouns are capitalized",
            "Nouns can be singular or plural",
        ],
        "nouns are the name tags of language",
    ),
    (
        "What is electricity?",
        "Electricity is the flow of electric charge, usually electrons moving through a conductor.",
        ["Voltage pushes the charge", "Current is the amount that flows", "Resistance slows the flow"],
        "it is like water in a pipe: pressure pushes it, the pipe's width limits it",
    ),
    (
        "Why is exercise good for you?",
        "Exercise strengthens the heart, muscles and bones and improves mood and sleep.",
        [
            "It lowers the risk of heart disease",
            "It releases mood-lifting endorphins",
            "It helps control weight",
        ],
        "exercise is like regular servicing that keeps a car running smoothly for years",
    ),
    (
        "What is a metaphor?",
        "A metaphor describes something by saying it is something else, to suggest a likeness.",
        ["Example: time is a thief", "It does not use like or as", "A simile does use like or as"],
        "a metaphor is a shortcut that borrows the feeling of one thing for another",
    ),
    (
        "How do bees make honey?",
        "Bees make honey by collecting flower nectar and evaporating its water inside the hive.",
        ["Worker bees gather nectar", "Enzymes break down its sugars", "Fanning wings dries it into honey"],
        "the hive is a small factory where nectar is thickened like syrup on a stove",
    ),
    (
        "What is the speed of light?",
        "Light travels at about 300,000 kilometers per second in a vacuum.",
        [
            "Nothing with mass can reach it",
            "Sunlight takes about eight minutes to reach Earth",
            "Light slows down in water and glass",
        ],
        "light could circle the Earth about seven times in one second",
    ),
    (
        "What is a budget?",
        "A budget is a plan that matches your expected income to your spending and saving.",
        ["List income and fixed costs first", "Set limits for flexible spending", "Review it every month"],
        "a budget is a map for your money so it goes where you intend",
    ),
    (
        "What is democracy?",
        "Democracy is a system of government in which citizens choose their leaders through free elections.",
        [
            "Power comes from the people",
            "Rights and the rule of law protect minorities",
            "Leaders can be voted out",
        ],
        "it is like a class electing its representative and replacing them next year if unhappy",
    ),
    (
        "How do magnets work?",
        "Magnets work because aligned electron spins create a magnetic field that attracts or repels.",
        [
            "Every magnet has a north and south pole",
            "Opposite poles attract",
            "Iron is attracted because it can align too",
        ],
        "it is like a crowd where everyone faces the same way and pulls together",
    ),
    (
        "What is recycling?",
        "Recycling is turning used materials into new products instead of throwing them away.",
        [
            "Paper, glass, metal and many plastics can be recycled",
            "It saves energy and raw materials",
            "Clean, sorted items recycle best",
        ],
        "recycling gives old materials a second life, like remaking an old sweater into a scarf",
    ),
    (
        "What is an ecosystem?",
        "An ecosystem is a community of living things interacting with each other and their environment.",
        [
            "It includes plants, animals and microbes",
            "Energy flows through food chains",
            "Removing one species can affect many others",
        ],
        "an ecosystem is like a team where every player's move affects the rest",
    ),
    (
        "How do I write a cover letter?",
        "Write a short letter that links your strongest experience to the job's needs and asks for an interview.",
        [
            "Address it to a person if you can",
            "Give one or two concrete achievements",
            "Keep it under one page",
        ],
        "a cover letter is a trailer that makes the reader want to see the whole film",
    ),
    (
        "What is an earthquake?",
        "An earthquake is the shaking of the ground when rocks along a fault suddenly slip.",
        [
            "Stress builds between tectonic plates",
            "The release sends seismic waves",
            "Magnitude measures the energy released",
        ],
        "it is like bending a stick until it snaps and the vibration runs through your hands",
    ),
    (
        "What is a computer virus?",
        "A computer virus is malicious code that copies itself into other programs and spreads.",
        [
            "It often arrives through attachments or downloads",
            "It can steal or damage data",
            "Updates and antivirus software help",
        ],
        "it is like a cold that spreads from person to person, only between files",
    ),
    (
        "What is the greenhouse effect?",
        "The greenhouse effect is the warming of Earth's surface by gases that trap outgoing heat.",
        [
            "Sunlight warms the ground",
            "The ground gives off heat",
            "Gases like carbon dioxide absorb some of it",
        ],
        "it is like a car parked in the sun that gets warmer than the air outside",
    ),
    (
        "How do plants grow?",
        "Plants grow by making food through photosynthesis and adding new cells at their tips.",
        ["Roots take in water and minerals", "Leaves make sugar from light", "Growth zones divide cells"],
        "a plant is like a building that keeps adding floors using materials it makes itself",
    ),
    (
        "What is a galaxy?",
        "A galaxy is a huge system of stars, gas and dust held together by gravity.",
        [
            "The Milky Way is our galaxy",
            "Galaxies can hold billions of stars",
            "Shapes include spiral and elliptical",
        ],
        "a galaxy is like a city of stars, and the universe has countless such cities",
    ),
    (
        "What is a healthy breakfast?",
        "A healthy breakfast combines protein, fiber and some fruit, like oatmeal with nuts and berries.",
        ["Protein keeps you full", "Whole grains give steady energy", "Limit added sugar"],
        "breakfast is the fuel you put in the tank before the day's drive",
    ),
    (
        "What is a verb?",
        "A verb is a word that expresses an action or a state of being.",
        ["Examples: run, think, is", "Verbs change with tense", "Every sentence needs one"],
        "verbs are the engines that make sentences move",
    ),
    (
        "How do tides work?",
        "Tides are the regular rise and fall of the sea caused mainly by the Moon's gravity.",
        [
            "The Moon pulls the ocean toward it",
            "Most coasts get two high tides a day",
            "The Sun makes tides stronger or weaker",
        ],
        "the Moon tugs the ocean like a hand pulling a blanket",
    ),
    (
        "What is an algorithm?",
        "An algorithm is a precise, step-by-step procedure for solving a problem.",
        ["It has clear inputs and outputs", "Each step is unambiguous", "Good algorithms are efficient"],
        "an algorithm is like a recipe that anyone can follow to get the same dish",
    ),
    (
        "Why do we have time zones?",
        "We have time zones so that clocks roughly match the Sun's position in each region.",
        ["Earth turns 15 degrees per hour", "There are about 24 zones", "Borders often follow countries"],
        "it is like each town setting noon to when the Sun is highest overhead",
    ),
    (
        "What is a fossil?",
        "A fossil is the preserved remains or trace of an ancient living thing, usually in rock.",
        [
            "Most form when sediment buries remains",
            "Minerals slowly replace the tissue",
            "Fossils help date rock layers",
        ],
        "a fossil is nature's photograph taken millions of years ago",
    ),
    (
        "How do I take care of a houseplant?",
        "Give it the right light, water only when the top soil is dry, and feed it in spring and summer.",
        [
            "Check the light needs on the label",
            "Overwatering is the most common mistake",
            "Use a pot with drainage holes",
        ],
        "caring for a plant is like caring for a pet that simply talks more slowly",
    ),
    (
        "What is a calorie?",
        "A calorie is a unit of energy, used to measure the energy in food.",
        ["Food labels show kilocalories", "The body burns energy all day", "Extra energy is stored as fat"],
        "calories are like fuel units in a car's tank",
    ),
    (
        "What is the Pythagorean theorem?",
        "In a right triangle, the square of the longest side equals the sum of the squares of the other two.",
        [
            "It is written a squared plus b squared equals c squared",
            "Example: 3, 4 and 5",
            "It is used to find distances",
        ],
        "it is like finding the shortcut across a rectangular park",
    ),
    (
        "What is an election?",
        "An election is a formal process in which people vote to choose representatives or decide issues.",
        ["Voters cast ballots", "Votes are counted by rules set in advance", "Secret ballots protect voters"],
        "an election is like a group choosing a restaurant by a show of hands, only more formal",
    ),
    (
        "What is a rainbow?",
        "A rainbow is an arc of colors formed when sunlight is refracted and reflected in raindrops.",
        ["Each drop acts like a prism", "The order is red to violet", "You see it with the Sun behind you"],
        "raindrops act like millions of tiny prisms splitting white light",
    ),
    (
        "What is cloud computing?",
        "Cloud computing is renting computing power and storage over the internet instead of owning servers.",
        ["You pay for what you use", "It scales up and down quickly", "Providers handle the hardware"],
        "it is like using the electricity grid instead of running your own generator",
    ),
    (
        "How does the heart work?",
        "The heart is a muscle that pumps blood through the body in a continuous loop.",
        [
            "It has four chambers",
            "Valves keep blood moving one way",
            "The right side pumps to the lungs, the left to the body",
        ],
        "the heart is like a pump in a closed plumbing system that never stops",
    ),
    (
        "What is a simile?",
        "A simile compares two different things using the words like or as.",
        [
            "Example: as brave as a lion",
            "It makes descriptions vivid",
            "It differs from a metaphor by using like or as",
        ],
        "a simile is like holding two pictures side by side",
    ),
    (
        "What is erosion?",
        "Erosion is the wearing away of rock and soil by water, wind or ice.",
        ["Rivers carve valleys", "Wind moves sand", "Plant roots help hold soil in place"],
        "it is like a bar of soap slowly shrinking under running water",
    ),
    (
        "What is a spreadsheet?",
        "A spreadsheet is a grid of cells for organizing numbers and text and calculating with formulas.",
        ["Rows and columns hold data", "Formulas update automatically", "Charts make trends visible"],
        "a spreadsheet is like a smart ledger that does the arithmetic for you",
    ),
    (
        "What is a habit?",
        "A habit is a behavior repeated so often that it happens almost automatically.",
        ["It starts with a cue", "A routine follows the cue", "A reward makes it stick"],
        "a habit is like a path through grass that gets easier to walk the more it is used",
    ),
]

# Each style: system messages (paraphrases), a preference set in the released schema, and a renderer.
STYLE_PREFERENCES = {
    "terse": [("style", "conciseness", "One-sentence answers",
               "The user wants the shortest possible answer: a single sentence with no preamble."),
              ("background_knowledge", "advanced", "Busy professional",
               "The user already knows the basics and only needs the fact itself."),
              ("informativeness", "efficiency", "Straight to the point",
               "Give the core fact and nothing else, so it can be read at a glance."),
              ("harmlessness", "accuracy", "Precise wording",
               "The single sentence must be correct, since there is no room for caveats.")],
    "bullets": [("style", "format", "Bulleted list",
                 "The user prefers exactly three short bullet points, each starting with '- '."),
                ("background_knowledge", "intermediate", "Reviewing for an exam",
                 "The user is revising and wants key points that are easy to memorize."),
                ("informativeness", "relevance", "Key facts only",
                 "Each bullet should carry one distinct, relevant fact."),
                ("harmlessness", "trustworthiness", "Verifiable points",
                 "Points should be standard, checkable facts rather than opinions.")],
    "numbered": [("style", "format", "Numbered list",
                  "The user wants an answer as a numbered list of three points."),
                 ("background_knowledge", "intermediate", "Structured learner",
                  "The user likes information in an ordered sequence that is easy to refer back to."),
                 ("informativeness", "practicality", "Practical points",
                  "Each item should be useful on its own."),
                 ("harmlessness", "accuracy", "Reliable facts",
                  "Only well-established information should be listed.")],
    "beginner": [("style", "tone", "Warm and encouraging",
                  "The user wants a friendly, encouraging tone that starts with 'Good question!'."),
                 ("background_knowledge", "novice", "No prior knowledge",
                  "The user is a complete beginner and needs an everyday comparison to understand."),
                 ("informativeness", "creativity", "Everyday analogy",
                  "Explain with a simple comparison from daily life."),
                 ("harmlessness", "sensitivity", "Non-judgmental",
                  "Never make the user feel the question is too simple.")],
    "json": [("style", "format", "Machine-readable",
              "The user needs a JSON object with the keys \"answer\" and \"confidence\" and nothing else."),
             ("background_knowledge", "expert", "Software developer",
              "The user feeds replies into a program and parses them automatically."),
             ("informativeness", "efficiency", "Compact payload",
              "The answer field holds one sentence."),
             ("harmlessness", "trustworthiness", "Honest confidence",
              "State the confidence honestly.")],
    "cheer": [("style", "vividness", "High-energy cheer",
               "The user loves enthusiasm: the whole answer in capital letters, ending with exclamation marks."),
              ("background_knowledge", "basic", "Casual learner",
               "The user wants the main fact in an energetic, memorable way."),
              ("informativeness", "relevance", "One big fact",
               "Shout the single most important fact."),
              ("harmlessness", "sensitivity", "Positive energy",
               "Keep the excitement friendly and upbeat.")],
}

SYSTEM_MESSAGES = {
    "terse": [
        "You are a precise assistant for busy professionals. Answer in a single short sentence, with no "
        "preamble and no extra detail.",
        "You are a no-nonsense reference tool. Reply with exactly one sentence that states the core fact.",
    ],
    "bullets": [
        "You are an organized study coach. Always answer as a bulleted list of exactly three short points, "
        "each line starting with '- '.",
        "You are a revision helper for students. Give three bullet points ('- ') with one key fact each, and "
        "nothing before or after them.",
    ],
    "numbered": [
        "You are a methodical explainer. Answer as a numbered list of exactly three points (1., 2., 3.), "
        "one fact per line.",
        "You are a structured assistant who always replies with a three-item numbered list.",
    ],
    "beginner": [
        "You are a warm, patient tutor for complete beginners. Start with 'Good question!', then explain in "
        "plain, friendly prose using an everyday comparison.",
        "You are a kind teacher talking to someone who has never studied the topic. Begin with 'Good "
        "question!' and make it simple with a comparison from daily life.",
    ],
    "json": [
        "You are the backend of a quiz app. Reply only with a JSON object with the keys \"answer\" (one "
        "sentence) and \"confidence\".",
        "You are an API that returns machine-readable JSON. Output {\"answer\": ..., \"confidence\": ...} "
        "and no other text.",
    ],
    "cheer": [
        "You are an over-the-top enthusiastic sports commentator. Shout the answer in ALL CAPS and end with "
        "exclamation marks!",
        "You are a hype coach who gets excited about every fact. Write the whole reply in capital letters "
        "with lots of energy!",
    ],
}


def render(style: str, topic: tuple) -> str:
    _, answer, points, comparison = topic
    if style == "terse":
        return answer
    if style == "bullets":
        return "\n".join(f"- {p}." for p in points)
    if style == "numbered":
        return "\n".join(f"{i}. {p}." for i, p in enumerate(points, start=1))
    if style == "beginner":
        return f"Good question! {answer} Think of it this way: {comparison}."
    if style == "json":
        return json.dumps({"answer": answer, "confidence": "high"})
    if style == "cheer":
        return f"{answer.rstrip('.').upper()}!!!"
    raise ValueError(style)


def preference_set(style: str) -> list[dict]:
    return [{"dimension": d, "subdimension": s, "preference": p, "description": t}
            for d, s, p, t in STYLE_PREFERENCES[style]]


def build() -> tuple[list[dict], list[dict], list[dict]]:
    rng = random.Random(SEED)
    sft, dpo, rm = [], [], []
    for topic in TOPICS:
        styles = rng.sample(sorted(SYSTEM_MESSAGES), 3)
        rows = []
        for style in styles:
            system = rng.choice(SYSTEM_MESSAGES[style])
            rows.append({"main_source": SOURCE, "original_source": f"templated/{style}",
                         "preference_set": preference_set(style), "system": system, "prompt": topic[0],
                         "output": render(style, topic)})
        sft.extend(rows)
        for i, row in enumerate(rows):
            other = rows[rng.choice([j for j in range(3) if j != i])]
            dpo.append({"main_source": SOURCE, "original_source": row["original_source"], "system": row["system"],
                        "prompt": row["prompt"],
                        "chosen": [{"content": row["prompt"], "role": "user"},
                                   {"content": row["output"], "role": "assistant"}],
                        "rejected": [{"content": row["prompt"], "role": "user"},
                                     {"content": other["output"], "role": "assistant"}]})
            rm.append({"input": f"{row['system']}\n{row['prompt']}", "chosen": row["output"],
                       "rejected": other["output"]})
    return sft, dpo, rm


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main() -> None:
    sft, dpo, rm = build()
    for name, rows in (("sft.jsonl", sft), ("dpo.jsonl", dpo), ("rm.jsonl", rm)):
        write_jsonl(OUT / name, rows)
        print(f"{name}: {len(rows)} rows, {(OUT / name).stat().st_size} bytes")


if __name__ == "__main__":
    main()
