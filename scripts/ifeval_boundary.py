"""Build IFEval response sets that sit at the decision boundaries of every instruction type,
for the parity test of the `ifeval` plugin against the reference checker.

    python scripts/ifeval_boundary.py INPUT_DATA.jsonl OUT_DIR

Writes three sets (IFEval rows plus `response`, `id` = "<key>-<n>"):
  counts.jsonl  counts at N-1, N, N+1 (words, sentences with abbreviations and decimals,
                paragraphs, bullets, highlights, sections, placeholders, letters, keywords,
                capital words incl. contractions), commas;
  format.jsonl  JSON (fences, NaN, trailing text, single quotes), titles, quotes, separators,
                end phrases, postscripts, repeated prompts, fixed answers, casing, languages;
  loose.jsonl   passing answers wrapped the way the loose mode forgives: a preamble line,
                a closing line, both, markdown bold.
Deterministic (seeded); the texts are written here, none is copied from elsewhere.
"""

import json
import os
import random
import sys

WORDS = ("river stone light garden window paper music winter market signal harvest journey "
         "planet silver engine season forest bridge candle meadow").split()

LANG_TEXT = {
    "en": "The weather was calm this morning and we walked along the river before breakfast.",
    "de": "Das Wetter war heute Morgen ruhig, und wir sind vor dem Frühstück am Fluss entlang gegangen.",
    "it": "Il tempo era calmo stamattina e abbiamo camminato lungo il fiume prima di colazione.",
    "pt": "O tempo estava calmo esta manhã e caminhamos ao longo do rio antes do café.",
    "es": "El tiempo estaba tranquilo esta mañana y caminamos junto al río antes del desayuno.",
    "fr": "Le temps était calme ce matin et nous avons marché le long de la rivière avant le petit déjeuner.",
    "fi": "Sää oli tänä aamuna tyyni, ja kävelimme joen vartta ennen aamiaista.",
    "sw": "Hali ya hewa ilikuwa shwari asubuhi hii na tulitembea kando ya mto kabla ya kifungua kinywa.",
    "vi": "Sáng nay thời tiết rất êm dịu và chúng tôi đã đi dạo dọc bờ sông trước bữa sáng.",
    "ru": "Сегодня утром погода была тихой, и мы гуляли вдоль реки перед завтраком.",
    "bg": "Тази сутрин времето беше тихо и ние се разходихме покрай реката преди закуска.",
    "hi": "आज सुबह मौसम शांत था और हम नाश्ते से पहले नदी के किनारे टहले।",
    "mr": "आज सकाळी हवामान शांत होते आणि आम्ही नाश्त्यापूर्वी नदीकाठी फिरलो.",
    "ne": "आज बिहान मौसम शान्त थियो र हामी बिहानको खाना अघि नदीको किनारमा हिँड्यौं।",
    "ar": "كان الطقس هادئا هذا الصباح ومشينا على طول النهر قبل الفطور.",
    "fa": "امروز صبح هوا آرام بود و ما پیش از صبحانه کنار رودخانه قدم زدیم.",
    "ur": "آج صبح موسم پرسکون تھا اور ہم ناشتے سے پہلے دریا کے کنارے چلے۔",
    "ko": "오늘 아침 날씨가 고요해서 우리는 아침 식사 전에 강을 따라 걸었다.",
    "th": "เช้านี้อากาศสงบและเราเดินเล่นริมแม่น้ำก่อนอาหารเช้า",
    "ta": "இன்று காலை வானிலை அமைதியாக இருந்தது, காலை உணவுக்கு முன் ஆற்றங்கரையில் நடந்தோம்.",
    "te": "ఈ ఉదయం వాతావరణం ప్రశాంతంగా ఉంది, మేము అల్పాహారానికి ముందు నది ఒడ్డున నడిచాము.",
    "kn": "ಇಂದು ಬೆಳಿಗ್ಗೆ ಹವಾಮಾನ ಶಾಂತವಾಗಿತ್ತು ಮತ್ತು ನಾವು ಉಪಾಹಾರದ ಮೊದಲು ನದಿಯ ದಡದಲ್ಲಿ ನಡೆದೆವು.",
    "gu": "આજે સવારે હવામાન શાંત હતું અને અમે નાસ્તા પહેલાં નદીના કિનારે ચાલ્યા.",
    "pa": "ਅੱਜ ਸਵੇਰੇ ਮੌਸਮ ਸ਼ਾਂਤ ਸੀ ਅਤੇ ਅਸੀਂ ਨਾਸ਼ਤੇ ਤੋਂ ਪਹਿਲਾਂ ਦਰਿਆ ਦੇ ਕੰਢੇ ਤੁਰੇ।",
    "bn": "আজ সকালে আবহাওয়া শান্ত ছিল এবং আমরা নাস্তার আগে নদীর ধারে হাঁটলাম।",
}

SENTENCE_KINDS = [
    "The river is wide.",
    "Mr. Smith arrived at 3.5 p.m. and left.",
    "It costs $4.20, e.g. a small coffee!",
    "Is this the U.S. office?",
    "She said \"stop.\" Then silence.",
    "Wait... what happened next",
    "Dr. J. R. Tolkien wrote it.",
]


def words(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def sentences(rng, n):
    return " ".join(rng.choice(SENTENCE_KINDS) for _ in range(n))


def around(n):
    return sorted({max(0, n - 1), n, n + 1})


def responses(iid, kw, prompt, rng):
    """Responses near the boundary of one instruction."""
    out = []
    if iid == "length_constraints:number_words":
        n = kw["num_words"]
        out += [words(rng, k) for k in around(n)]
        out.append(words(rng, n) + " don't-stop_now 3.14")
    elif iid == "length_constraints:number_sentences":
        n = kw["num_sentences"]
        out += [sentences(rng, k) for k in around(n) if k > 0]
        out.append("\n".join(SENTENCE_KINDS[: max(1, n)]))
    elif iid == "length_constraints:number_paragraphs":
        n = kw["num_paragraphs"]
        for k in around(n):
            if k:
                out.append("\n***\n".join(words(rng, 8) for _ in range(k)))
        out.append("***\n" + "\n* * *\n".join(words(rng, 5) for _ in range(n)) + "\n***")
        out.append(" *** ".join(words(rng, 5) for _ in range(n)) + " ***  *** end")
    elif iid == "length_constraints:nth_paragraph_first_word":
        n, i, w = kw["num_paragraphs"], kw["nth_paragraph"], kw["first_word"]
        for k in around(n):
            paras = [words(rng, 6) for _ in range(max(k, 1))]
            if i <= len(paras):
                paras[i - 1] = f"{w.capitalize()} {paras[i - 1]}"
            out.append("\n\n".join(paras))
        paras = [words(rng, 6) for _ in range(n)]
        paras[i - 1] = f"\"{w}, {paras[i - 1]}"
        out.append("\n\n".join(paras) + "\n\n\n")
        paras[i - 1] = f"{w}s {paras[i - 1]}"
        out.append("\n\n".join(paras))
    elif iid == "detectable_format:number_bullet_lists":
        n = kw["num_bullets"]
        for k in around(n):
            out.append("\n".join(f"* {words(rng, 3)}" for _ in range(k)))
        out.append("\n".join(f"- {words(rng, 3)}" for _ in range(n)) + "\n**bold line**\n  * nested")
    elif iid == "detectable_format:number_highlighted_sections":
        n = kw["num_highlights"]
        for k in around(n):
            out.append(" ".join(f"*{words(rng, 2)}*" for _ in range(k)) + " tail")
        out.append(" ".join(f"**{words(rng, 2)}**" for _ in range(n - 1)) + " * * and *\n*")
    elif iid == "detectable_format:multiple_sections":
        n, s = kw["num_sections"], kw["section_spliter"]
        for k in around(n):
            out.append("\n".join(f"{s} {j + 1}\n{words(rng, 5)}" for j in range(k)))
        out.append("\n".join(f"{s.lower()} {j + 1}\n{words(rng, 5)}" for j in range(n)))
        out.append("\n".join(f"{s}{j + 1} {words(rng, 5)}" for j in range(n)))
    elif iid == "detectable_content:number_placeholders":
        n = kw["num_placeholders"]
        for k in around(n):
            out.append(" ".join(f"[{rng.choice(WORDS)}]" for _ in range(k)) + " done")
        out.append("[a] [] [b]]" + " [c" * n)
    elif iid == "keywords:letter_frequency":
        n, letter = kw["let_frequency"], kw["letter"]
        for k in around(n):
            out.append("xy " + (letter.upper() + "o ") * k)
    elif iid == "keywords:frequency":
        n, w = kw["frequency"], kw["keyword"]
        for k in around(n):
            out.append(" ".join([w.upper(), words(rng, 2)] * k) if k else words(rng, 4))
        out.append(" ".join([w + "s"] * n))
    elif iid == "keywords:existence":
        ks = kw["keywords"]
        out.append(" ".join(k.upper() for k in ks))
        out.append(" ".join(ks[:-1]) + " " + words(rng, 3))
        out.append(" ".join(k + "ing" for k in ks))
    elif iid == "keywords:forbidden_words":
        fw = kw["forbidden_words"]
        out.append(words(rng, 6))
        out.append("un" + fw[0] + "ed and " + fw[-1] + "_x")
        out.append(words(rng, 3) + " " + fw[-1].capitalize() + ".")
    elif iid == "change_case:capital_word_frequency":
        n = kw["capital_frequency"]
        for k in around(n):
            out.append(" ".join(["WORD"] * k) + " and some lower words.")
        out.append("I DON'T KNOW " + " ".join(["OK"] * max(0, n - 4)) + " U.S.A. rocks")
    elif iid == "punctuation:no_comma":
        out += ["no commas at all here", "one, comma", "full-width，comma"]
    elif iid == "detectable_format:json_format":
        out += ['```json\n{"a": [1, 2.5, null]}\n```', '```JSON\n{"a": 1}```', '{"a": NaN}',
                "{'a': 1}", '{"a": 1} trailing', '```\n[1, 2,]\n```', '  "just a string"  ']
    elif iid == "detectable_format:title":
        out += ["<<A Title>>\n" + words(rng, 5), "<< >> " + words(rng, 3), "<<two\nlines>>",
                "<<<nested>>>", "no title here"]
    elif iid == "startend:quotation":
        out += ['"' + words(rng, 4) + '"', '  "' + words(rng, 4) + '"\n', '"', "'single'",
                '"unclosed ' + words(rng, 2)]
    elif iid == "combination:two_responses":
        a, b = words(rng, 5), words(rng, 5)
        out += [f"{a}\n******\n{b}", f"{a}\n******\n{a}", f"******\n{a}\n******\n{b}\n******",
                f"{a}\n******\n\n******\n{b}", f"{a}\n*******\n{b}", f"{a}\n******\n{b}\n******\n{a}"]
    elif iid == "startend:end_checker":
        e = kw["end_phrase"]
        out += [words(rng, 4) + " " + e, words(rng, 4) + " " + e.lower() + '"  ',
                words(rng, 4) + " " + e + " Thanks.", words(rng, 4) + " **" + e + "**",
                words(rng, 4) + " " + e.rstrip("?.!")]
    elif iid == "detectable_content:postscript":
        m = kw["postscript_marker"]
        out += [words(rng, 5) + f"\n\n{m} " + words(rng, 3), words(rng, 5) + " p.s. " + words(rng, 2),
                words(rng, 5) + "\nP. P. S " + words(rng, 2), words(rng, 5) + "\nPS " + words(rng, 2),
                words(rng, 5) + "\n**P.S.** " + words(rng, 2)]
    elif iid == "combination:repeat_prompt":
        p = kw["prompt_to_repeat"]
        out += [p + "\n" + words(rng, 5), "  " + p.upper() + " " + words(rng, 3),
                "Sure. " + p, p[: max(1, len(p) // 2)]]
    elif iid == "detectable_format:constrained_response":
        out += ["My answer is yes.", "  my answer is no.", "My answer is maybe", "Well... My answer is maybe. Because."]
    elif iid == "change_case:english_lowercase":
        out += [LANG_TEXT["en"].lower(), LANG_TEXT["en"], LANG_TEXT["de"].lower(), "12345 !!!",
                LANG_TEXT["en"].lower() + " I"]
    elif iid == "change_case:english_capital":
        out += [LANG_TEXT["en"].upper(), LANG_TEXT["en"], LANG_TEXT["it"].upper(), "123 ...",
                LANG_TEXT["en"].upper() + " x"]
    elif iid == "language:response_language":
        lang = kw["language"]
        native = LANG_TEXT.get(lang, LANG_TEXT["de"])
        out += [native, native + " " + LANG_TEXT["en"], LANG_TEXT["en"], "42 + 17 = 59",
                native.split()[0]]
    return out


def wrap_loose(resp, rng):
    """Variants the loose mode forgives."""
    return [
        "Sure! Here is my answer:\n" + resp,
        resp + "\nLet me know if you want changes.",
        "Answer:\n" + resp + "\nHope this helps!",
        "**" + resp.replace("\n", "**\n**") + "**",
    ]


def main():
    src, out_dir = sys.argv[1], sys.argv[2]
    os.makedirs(out_dir, exist_ok=True)
    rows = [json.loads(line) for line in open(src, encoding="utf-8") if line.strip()]
    rng = random.Random(20241129)
    sets = {"counts": [], "format": [], "loose": []}
    count_types = {"length_constraints", "detectable_content", "keywords", "punctuation"}
    for row in rows:
        n = 0
        for iid, kw in zip(row["instruction_id_list"], row["kwargs"]):
            kw = {k: v for k, v in kw.items() if v is not None}
            resps = responses(iid, kw, row["prompt"], rng)
            cat = iid.split(":")[0]
            target = "counts" if cat in count_types or iid in (
                "detectable_format:number_bullet_lists", "detectable_format:number_highlighted_sections",
                "detectable_format:multiple_sections", "change_case:capital_word_frequency") else "format"
            for r in resps:
                sets[target].append(dict(row, id=f"{row['key']}-{n}", response=r))
                n += 1
            for r in resps[:1]:
                for w in wrap_loose(r, rng):
                    sets["loose"].append(dict(row, id=f"{row['key']}-{n}", response=w))
                    n += 1
    for name, items in sets.items():
        with open(os.path.join(out_dir, f"{name}.jsonl"), "w", encoding="utf-8") as f:
            for it in items:
                f.write(json.dumps(it, ensure_ascii=False) + "\n")
        print(f"{name}: {len(items)} responses", file=sys.stderr)


if __name__ == "__main__":
    main()
