//! `spar:taxonomy` plugin: the SPaR taxonomy (§1) and its evolution conversation.
//! Another taxonomy is another plugin file with the same world.

wit_bindgen::generate!({
    world: "spar:taxonomy/taxonomy@0.1.0",
    path: ["../../wit/types", "../../wit/taxonomy"],
    generate_all,
});

use exports::spar::taxonomy::evolution::{Category, ConstraintType, Guest};
use spar::types::types::{Error, Message, PluginInfo, Role};

/// (type, examples)
type Types = &'static [(&'static str, &'static str)];

/// (category, subcategory, types)
const TAXONOMY: &[(&str, &str, Types)] = &[
    (
        "Format",
        "Length",
        &[
            ("characters", "a limit on the number of characters"),
            ("words", "at least, at most or exactly N words"),
            ("sentences", "a given number of sentences"),
            (
                "paragraphs",
                "a given number of paragraphs, separated in a given way",
            ),
            ("sections", "a given number of marked sections"),
        ],
    ),
    (
        "Format",
        "Text format",
        &[
            ("JSON", "the whole answer as JSON, possibly with given keys"),
            ("Markdown", "Markdown headings, emphasis or code blocks"),
            ("list", "a numbered or ordered list"),
            ("table", "a table with given columns or rows"),
            ("bullets", "bullet points, possibly a given number of them"),
            ("postscript", "a postscript starting with P.S."),
        ],
    ),
    (
        "Format",
        "Character format",
        &[
            ("uppercase", "all capital letters"),
            ("lowercase", "no capital letters"),
            ("mixed", "capitals for given words only, or title case"),
            (
                "frequency",
                "a letter or character used a given number of times",
            ),
        ],
    ),
    (
        "Format",
        "Template",
        &[
            ("example", "follow the form of a given example"),
            ("multiple-choice", "answer as one of given options"),
            ("special template", "fill in a given template"),
        ],
    ),
    (
        "Format",
        "Punctuation",
        &[
            ("without", "no commas, or no other given punctuation"),
            (
                "frequency",
                "a punctuation mark used a given number of times",
            ),
            ("start with", "start with a given punctuation mark"),
            ("end with", "end with a given punctuation mark"),
        ],
    ),
    (
        "Format",
        "Numeric format",
        &[
            ("integer", "numbers written as integers"),
            ("float", "numbers with a given number of decimals"),
            ("scientific", "numbers in scientific notation"),
            ("ordinal", "ordinal numbers such as 1st, 2nd"),
        ],
    ),
    (
        "Content",
        "Keyword",
        &[
            ("include", "include given keywords"),
            ("exclude", "never use given words"),
            ("frequency", "use a keyword a given number of times"),
        ],
    ),
    (
        "Content",
        "Symbol",
        &[
            (
                "title mark",
                "a title wrapped in double angular brackets <<like this>>",
            ),
            ("emoji", "a given number of emoji"),
            (
                "placeholder",
                "placeholders in square brackets such as [name]",
            ),
            ("custom symbol", "a given symbol used in a given way"),
        ],
    ),
    (
        "Content",
        "Sentence",
        &[
            ("start with", "begin with a given sentence or word"),
            ("end with", "end with a given phrase"),
            ("include", "include a given sentence"),
            ("syntax", "sentences of a given structure, e.g. questions"),
        ],
    ),
    (
        "Content",
        "Genre",
        &[
            ("poetry", "a poem, possibly in a given form"),
            ("novel", "a passage of fiction"),
            ("script", "a script with speakers"),
            ("letter", "a letter with greeting and sign-off"),
            ("speech", "a speech to an audience"),
            ("diary", "a diary entry"),
            ("tweet", "a post of tweet length"),
        ],
    ),
    (
        "General",
        "Language",
        &[
            ("English", "answer in English"),
            ("Chinese", "answer in Chinese"),
            ("Thai", "answer in Thai"),
            ("German", "answer in German"),
            ("Marathi", "answer in Marathi"),
            ("Spanish", "answer in Spanish"),
        ],
    ),
    (
        "General",
        "Situation",
        &[
            ("role-play", "answer as a given character"),
            ("reasoning", "show the reasoning in a given way"),
            ("topic", "stay on or address a given topic"),
        ],
    ),
    (
        "General",
        "Language style",
        &[
            ("formality", "formal or casual register"),
            ("writing style", "e.g. concise, descriptive, persuasive"),
            (
                "literary style",
                "in the style of a given author or movement",
            ),
            ("humor", "humorous"),
            ("era", "in the language of a given era"),
            ("job", "as written by a given profession"),
        ],
    ),
    (
        "General",
        "Sentiment",
        &[
            ("positive", "a positive tone"),
            ("negative", "a negative tone"),
            ("hopeful", "a hopeful tone"),
            ("fascinating", "a fascinated, captivating tone"),
        ],
    ),
];

const RULES: &str = "You are an expert at writing complex instructions. Rewrite the seed \
prompt below into ONE new, natural prompt that adds constraints to it.\n\
Rules:\n\
1. The main constraint is of type \u{201c}{main}\u{201d} ({examples}); keep it unless it \
contradicts the seed prompt.\n\
2. Add 1 to 3 other constraints. They must be reasonable, must not conflict with each \
other, and should be as diverse as possible; constraint types outside this list are welcome: \
{others}.\n\
3. Prefer constraints other than length.\n\
4. Weave the constraints into the prompt; do not list them as points.\n\
5. Do not answer the prompt.\n\
6. If the seed prompt is a math or coding problem, output None.\n\
7. Add no visual elements (images, videos, charts).\n\
Seed prompt: \u{201c}{seed}\u{201d}\n\
Write the new prompt between [[start]] and [[end]].";

fn find(path: &str) -> Option<(&'static str, &'static str)> {
    let (sub, ty) = path.split_once('/')?;
    TAXONOMY
        .iter()
        .filter(|(_, s, _)| *s == sub)
        .flat_map(|(_, _, types)| types.iter())
        .find(|(t, _)| *t == ty)
        .copied()
}

struct Taxonomy;

impl Guest for Taxonomy {
    fn info() -> PluginInfo {
        PluginInfo {
            name: "taxonomy".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "The SPaR constraint taxonomy (Format, Content, General)".into(),
        }
    }

    fn categories() -> Vec<Category> {
        TAXONOMY
            .iter()
            .map(|(name, sub, types)| Category {
                name: (*name).into(),
                subcategory: (*sub).into(),
                types: types
                    .iter()
                    .map(|(t, d)| ConstraintType {
                        name: (*t).into(),
                        description: (*d).into(),
                    })
                    .collect(),
            })
            .collect()
    }

    fn evolution_messages(seed: String, main_type: String) -> Result<Vec<Message>, Error> {
        if seed.trim().is_empty() {
            return Err(Error::InvalidInput("empty seed prompt".into()));
        }
        let Some((ty, examples)) = find(&main_type) else {
            return Err(Error::UnknownId(format!(
                "`{main_type}` is not a `subcategory/type` of this taxonomy"
            )));
        };
        let others = TAXONOMY
            .iter()
            .map(|(_, s, _)| *s)
            .collect::<Vec<_>>()
            .join(", ");
        let content = RULES
            .replace("{main}", &main_type)
            .replace("{examples}", &format!("{ty}: {examples}"))
            .replace("{others}", &others)
            .replace("{seed}", seed.trim());
        Ok(vec![Message {
            role: Role::User,
            content,
        }])
    }

    fn parse_evolved(output: String) -> Result<Option<String>, Error> {
        let body = match output.find("[[start]]") {
            Some(at) => {
                let rest = &output[at + "[[start]]".len()..];
                rest.find("[[end]]").map_or(rest, |end| &rest[..end])
            }
            // A bare "None" (math/coding seed) is a valid answer without markers.
            None if output.trim().trim_end_matches('.') == "None" => "None",
            None => {
                return Err(Error::InvalidInput(
                    "no [[start]] marker in the output".into(),
                ));
            }
        };
        let body = body.trim();
        if body.is_empty() {
            return Err(Error::InvalidInput("an empty evolved prompt".into()));
        }
        Ok((body.trim_end_matches('.') != "None").then(|| body.to_string()))
    }
}

export!(Taxonomy);
