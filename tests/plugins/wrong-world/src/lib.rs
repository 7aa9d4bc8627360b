//! A valid component of a foreign world: loading it as any spar kind must fail in one line.

wit_bindgen::generate!({
    inline: "
        package other:thing@1.0.0;
        interface greeter { greet: func(name: string) -> string; }
        world foreign { export greeter; }
    ",
    world: "foreign",
});

struct Foreign;

impl exports::other::thing::greeter::Guest for Foreign {
    fn greet(name: String) -> String {
        format!("hello {name}")
    }
}

export!(Foreign);
