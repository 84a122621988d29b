//! Decision rules: CEL expressions over the instance variables, which are top-level
//! identifiers (`amount > 10000`).

use std::collections::HashMap;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, LazyLock};

use serde::{Serialize, Serializer};
use serde_json::{Map, Value};

static ENV: LazyLock<Arc<cel::Env>> = LazyLock::new(|| Arc::new(cel::Env::stdlib()));

/// Longest accepted expression, in characters.
const MAX_EXPRESSION_LENGTH: usize = 2000;
/// Deepest accepted bracket nesting. CEL's parser recurses through about ten grammar rules per
/// level, with large frames in debug builds: deeper nesting could overflow a 2 MiB thread
/// stack (tokio's default), which aborts the process instead of failing the command.
const MAX_NESTING: u16 = 10;
/// Deepest accepted syntax tree; the evaluator recurses once per level.
const MAX_TREE_DEPTH: usize = 32;

/// A compiled CEL expression, kept with its source text. Equality is by source.
#[derive(Clone)]
pub struct Expr {
    source: String,
    /// The syntax tree, macros expanded; `None` only inside a definition being rejected (see
    /// [`Expr::invalid`]).
    program: Option<Arc<cel::IdedExpr>>,
    /// The variables it reads: only those are converted for an evaluation.
    variables: Vec<String>,
}

/// Why an expression gave no boolean.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    #[error("{0}")]
    Evaluation(String),
    #[error("it gave a {0}, not a bool")]
    NotBool(String),
}

impl Expr {
    /// Compiles `source`; the error is the parser's message, or says which limit it passed
    /// (2000 characters, 10 levels of brackets, a syntax tree 32 deep).
    pub fn compile(source: &str) -> Result<Self, String> {
        if source.chars().count() > MAX_EXPRESSION_LENGTH {
            return Err(format!(
                "the expression is longer than {MAX_EXPRESSION_LENGTH} characters"
            ));
        }
        // The parser is third-party code fed user input: a panic in it must not take the
        // command down with it. Its recursion limit keeps its stack small.
        let parsed = catch_unwind(|| ENV.parser().max_recursion_depth(MAX_NESTING).parse(source))
            .map_err(|_| "the expression could not be parsed".to_owned())?;
        let program = parsed.map_err(|e| {
            let message = e.to_string();
            if message.contains("Recursion limit") {
                format!(
                    "the expression nests brackets more than {MAX_NESTING} levels deep; split it"
                )
            } else {
                message
            }
        })?;
        if tree_depth(&program) > MAX_TREE_DEPTH {
            return Err(format!(
                "the expression is nested more than {MAX_TREE_DEPTH} levels deep; split it"
            ));
        }
        let variables = program
            .references()
            .variables()
            .into_iter()
            .map(str::to_owned)
            .collect();
        Ok(Self {
            source: source.to_owned(),
            program: Some(Arc::new(program)),
            variables,
        })
    }

    /// A stand-in for an expression that failed to compile, so the parser can go on checking
    /// the rest of a definition it will reject.
    pub(super) fn invalid(source: Option<&Value>) -> Self {
        Self {
            source: source
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            program: None,
            variables: Vec::new(),
        }
    }

    /// The text it was compiled from.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// Evaluates against `variables`; anything but a boolean result is an error.
    pub fn evaluate(&self, variables: &Map<String, Value>) -> Result<bool, ExprError> {
        let Some(program) = &self.program else {
            return Err(ExprError::Evaluation(
                "the expression is not valid".to_owned(),
            ));
        };
        let mut context = cel::Context::with_env(Arc::clone(&ENV));
        for name in &self.variables {
            if let Some(value) = variables.get(name) {
                context.add_variable_from_value(name.as_str(), to_cel(value));
            }
        }
        let result = catch_unwind(AssertUnwindSafe(|| cel::Value::resolve(program, &context)))
            .map_err(|_| ExprError::Evaluation("the evaluator failed".to_owned()))?;
        match result {
            Ok(cel::Value::Bool(b)) => Ok(b),
            Ok(other) => Err(ExprError::NotBool(other.type_of().to_string())),
            Err(e) => Err(ExprError::Evaluation(e.to_string())),
        }
    }
}

/// The depth of an expression's syntax tree, without recursion.
fn tree_depth(root: &cel::IdedExpr) -> usize {
    use cel::common::ast::{EntryExpr, Expr as Node};
    let mut deepest = 0;
    let mut stack = vec![(root, 1)];
    while let Some((node, depth)) = stack.pop() {
        deepest = deepest.max(depth);
        let below = depth + 1;
        match &node.expr {
            Node::Call(call) => {
                stack.extend(call.target.iter().map(|t| (&**t, below)));
                stack.extend(call.args.iter().map(|a| (a, below)));
            }
            Node::Comprehension(c) => {
                for part in [
                    &c.iter_range,
                    &c.accu_init,
                    &c.loop_cond,
                    &c.loop_step,
                    &c.result,
                ] {
                    stack.push((part, below));
                }
            }
            Node::List(list) => stack.extend(list.elements.iter().map(|e| (e, below))),
            Node::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(e) = &entry.expr {
                        stack.push((&e.key, below));
                        stack.push((&e.value, below));
                    }
                }
            }
            Node::Struct(s) => {
                for entry in &s.entries {
                    if let EntryExpr::StructField(f) = &entry.expr {
                        stack.push((&f.value, below));
                    }
                }
            }
            Node::Select(select) => stack.push((&select.operand, below)),
            Node::Unspecified | Node::Ident(_) | Node::Literal(_) => {}
        }
    }
    deepest
}

/// JSON to CEL: whole numbers become `int` (or `uint` above `i64::MAX`), others `double`, so
/// `amount > 10000` compares as people expect.
fn to_cel(value: &Value) -> cel::Value {
    match value {
        Value::Null => cel::Value::Null,
        Value::Bool(b) => cel::Value::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => cel::Value::Int(i),
            (None, Some(u)) => cel::Value::UInt(u),
            _ => cel::Value::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => cel::Value::String(Arc::new(s.clone())),
        Value::Array(items) => cel::Value::List(Arc::new(items.iter().map(to_cel).collect())),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), to_cel(v)))
            .collect::<HashMap<String, cel::Value>>()
            .into(),
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.source).finish()
    }
}

impl PartialEq for Expr {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Expr {}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn rules_read_variables_as_identifiers() {
        let rule = Expr::compile("amount > 10000 && dept == 'it'").unwrap();
        assert_eq!(
            rule.evaluate(&vars(json!({"amount": 12000, "dept": "it"}))),
            Ok(true)
        );
        assert_eq!(
            rule.evaluate(&vars(json!({"amount": 9000.5, "dept": "it"}))),
            Ok(false)
        );
        let nested = Expr::compile("order.lines.size() > 1 && order.lines[0].qty == 2").unwrap();
        let order = json!({"order": {"lines": [{"qty": 2}, {"qty": 1}]}});
        assert_eq!(nested.evaluate(&vars(order)), Ok(true));
    }

    #[test]
    fn missing_variables_and_non_booleans_are_errors_not_panics() {
        let rule = Expr::compile("amount > 10000").unwrap();
        assert!(matches!(
            rule.evaluate(&Map::new()),
            Err(ExprError::Evaluation(_))
        ));
        let not_bool = Expr::compile("amount + 1").unwrap();
        assert_eq!(
            not_bool.evaluate(&vars(json!({"amount": 1}))),
            Err(ExprError::NotBool("int".into()))
        );
        let bad_types = Expr::compile("amount > 'x'").unwrap();
        assert!(bad_types.evaluate(&vars(json!({"amount": 1}))).is_err());
    }

    #[test]
    fn expressions_that_could_exhaust_the_stack_are_refused() {
        let parens = |n: usize| format!("{}1{} > 0", "(".repeat(n), ")".repeat(n));
        assert!(Expr::compile(&parens(8)).is_ok());
        let nested = Expr::compile(&parens(40)).unwrap_err();
        assert!(nested.contains("nests brackets more than 10"), "{nested}");
        assert!(Expr::compile(&parens(5000)).is_err());
        let chain = |n: usize| format!("{}1 > 0", "1 + ".repeat(n));
        assert!(Expr::compile(&chain(20)).is_ok());
        let long = Expr::compile(&chain(100)).unwrap_err();
        assert!(long.contains("nested more than"), "{long}");
        assert!(Expr::compile(&"a".repeat(MAX_EXPRESSION_LENGTH + 1)).is_err());
    }

    #[test]
    fn the_deepest_accepted_expressions_evaluate_on_a_small_stack() {
        let deepest = [
            format!("{}1 > 0", "1 + ".repeat(MAX_TREE_DEPTH - 3)),
            format!("{}true", "!".repeat(MAX_TREE_DEPTH - 1)),
            format!("{}x{} > 0", "(".repeat(9), ")".repeat(9)),
        ];
        for source in deepest {
            let expr = Expr::compile(&source).unwrap_or_else(|e| panic!("{source}: {e}"));
            let vars = vars(json!({"x": 1}));
            // 2 MiB: tokio's worker threads.
            let result = std::thread::Builder::new()
                .stack_size(2 << 20)
                .spawn(move || expr.evaluate(&vars).is_ok())
                .unwrap()
                .join()
                .unwrap();
            assert!(result, "{source}");
        }
    }

    #[test]
    fn syntax_errors_are_reported_at_compile_time() {
        for bad in ["amount >", "", "((", "a b"] {
            assert!(Expr::compile(bad).is_err(), "{bad:?} compiled");
        }
    }
}
