//! Exports `edge-test:greeter/greet`: the provider side of the
//! component-dependency test.

wit_bindgen::generate!({ path: "wit", world: "greeter" });

struct Greeter;

impl exports::edge_test::greeter::greet::Guest for Greeter {
    fn greet(name: String) -> String {
        format!("hello, {name}, from the greeter component")
    }
}

export!(Greeter);
