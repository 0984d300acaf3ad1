//! Validation of JSON bodies against the official Cells REST swagger (`definitions`).
//!
//! Each validator is built from `{"definitions": <swagger definitions>, "allOf": [{"$ref":
//! "#/definitions/NAME"}]}` (draft 4, as Swagger 2 uses). In strict mode (the default),
//! every object definition that lists `properties` and no `additionalProperties` gets
//! `additionalProperties: false`, so a misspelled or invented field fails too.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde_json::{Value, json};

pub struct Swagger {
    definitions: Value,
    validators: Mutex<HashMap<String, std::sync::Arc<jsonschema::Validator>>>,
}

/// Where the swagger file is.
pub fn swagger_path() -> PathBuf {
    if let Ok(p) = std::env::var("CELLS_SWAGGER") {
        return PathBuf::from(p);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest
        .join("../../shared/cells-openapi/cellsapi-rest.swagger.json")
        .canonicalize()
        .unwrap_or_else(|_| manifest.join("../../shared/cells-openapi/cellsapi-rest.swagger.json"))
}

fn strictify(v: &mut Value) {
    match v {
        Value::Object(map) => {
            let is_object_with_props = map.contains_key("properties")
                && !map.contains_key("additionalProperties")
                && map.get("type").is_none_or(|t| t == "object");
            if is_object_with_props {
                map.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, child) in map.iter_mut() {
                strictify(child);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strictify),
        _ => {}
    }
}

impl Swagger {
    /// Load the swagger (panics, failing the test, when it cannot be read).
    pub fn load() -> Swagger {
        Swagger::load_with(true)
    }

    pub fn load_with(strict: bool) -> Swagger {
        let path = swagger_path();
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read the Cells swagger at {} ({e}); set CELLS_SWAGGER",
                path.display()
            )
        });
        let doc: Value = serde_json::from_str(&text).expect("swagger is JSON");
        let mut definitions = doc["definitions"].clone();
        assert!(definitions.is_object(), "swagger has no definitions");
        if strict {
            strictify(&mut definitions);
        }
        Swagger {
            definitions,
            validators: Mutex::new(HashMap::new()),
        }
    }

    fn validator(&self, definition: &str) -> std::sync::Arc<jsonschema::Validator> {
        let mut cache = self.validators.lock().unwrap();
        cache
            .entry(definition.to_string())
            .or_insert_with(|| {
                assert!(
                    self.definitions.get(definition).is_some(),
                    "no definition {definition} in the swagger"
                );
                let schema = json!({
                    "definitions": self.definitions,
                    "allOf": [{"$ref": format!("#/definitions/{definition}")}],
                });
                std::sync::Arc::new(
                    jsonschema::options()
                        .with_draft(jsonschema::Draft::Draft4)
                        .build(&schema)
                        .unwrap_or_else(|e| panic!("schema for {definition}: {e}")),
                )
            })
            .clone()
    }

    /// Panic (failing the test) unless `value` is a valid `definition`.
    pub fn validate(&self, definition: &str, value: &Value) {
        let v = self.validator(definition);
        let errors: Vec<String> = v
            .iter_errors(value)
            .map(|e| format!("{} at {}", e, e.instance_path))
            .collect();
        assert!(
            errors.is_empty(),
            "body does not match swagger {definition}: {errors:?}\nbody: {value}"
        );
    }

    /// True if `value` is a valid `definition` (for negative tests of the validator).
    pub fn is_valid(&self, definition: &str, value: &Value) -> bool {
        self.validator(definition).is_valid(value)
    }
}
