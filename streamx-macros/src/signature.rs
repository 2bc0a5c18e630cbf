//! Checks on the shape of the annotated function.
//!
//! Only what syntax can decide is checked here: the function must be a free `async fn`
//! without generics or `self`, taking exactly one argument, and its form: an argument
//! written `Vec<...>` makes a batch handler, anything else a one-message handler. Whether
//! the argument and return *types* are acceptable is left to trait bounds in the generated
//! code, so those errors carry the runtime's explanation and point at the type.

use proc_macro2::TokenStream;
use quote::ToTokens;
use syn::{FnArg, Ident, ItemFn, ReturnType, Signature, Type};

use crate::Errors;

/// How many messages one call of the handler takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Form {
    /// `async fn f(msg: Message<T>)`.
    One,
    /// `async fn f(batch: Vec<Message<T>>)`.
    Batch,
}

/// What the generated code needs to know about a valid handler.
pub(crate) struct Handler<'a> {
    /// One message or a batch per call, from the argument's type.
    pub(crate) form: Form,
    /// The function's name.
    pub(crate) ident: &'a Ident,
    /// The type of its only argument.
    pub(crate) arg: &'a Type,
    /// Its declared return type; `None` for `()` written as no `-> T` at all.
    pub(crate) output: Option<&'a Type>,
}

/// Checks `func` and reports every problem at once, each spanned on the offending token.
pub(crate) fn check(func: &ItemFn) -> syn::Result<Handler<'_>> {
    let sig = &func.sig;
    let mut errors = Errors::default();

    if let Some(token) = &sig.constness {
        errors.push(syn::Error::new_spanned(token, "a stream consumer cannot be a `const fn`"));
    }
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "a stream consumer must be an `async fn`; add `async` before `fn`",
        ));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(token, "a stream consumer cannot be an `unsafe fn`"));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(abi, "a stream consumer cannot declare an ABI; remove `extern`"));
    }
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            "a stream consumer cannot be generic; use a concrete payload type such as \
             `Message<Order>`",
        ));
    }
    if let Some(where_clause) = &sig.generics.where_clause {
        errors.push(syn::Error::new_spanned(where_clause, "a stream consumer cannot have a `where` clause"));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(variadic, "a stream consumer cannot be variadic"));
    }

    let arg = arguments(sig, &mut errors);
    errors.finish()?;
    let Some(arg) = arg else {
        // Unreachable: `arguments` records an error whenever it returns `None`.
        return Err(syn::Error::new_spanned(&sig.ident, "a stream consumer takes exactly one argument"));
    };
    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some(&**ty),
    };
    let form = if is_vec(arg) { Form::Batch } else { Form::One };
    Ok(Handler { form, ident: &sig.ident, arg, output })
}

/// Whether `ty` is written `Vec<...>` (any path ending in `Vec` with one type argument, so
/// `std::vec::Vec<...>` too): the batch form.
fn is_vec(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else { return false };
    last.ident == "Vec"
        && path.qself.is_none()
        && matches!(&last.arguments, syn::PathArguments::AngleBracketed(args) if args.args.len() == 1)
}

/// Checks the parameter list and returns the type of the only argument.
fn arguments<'a>(sig: &'a Signature, errors: &mut Errors) -> Option<&'a Type> {
    let mut typed = Vec::new();
    let mut has_receiver = false;
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => {
                has_receiver = true;
                errors.push(syn::Error::new_spanned(
                    receiver,
                    "a stream consumer cannot take `self`; make it a free function (outside \
                     any `impl` block)",
                ));
            }
            FnArg::Typed(pat_type) => typed.push(pat_type),
        }
    }

    match typed.as_slice() {
        [only] => {
            if let Type::ImplTrait(impl_trait) = &*only.ty {
                errors.push(syn::Error::new_spanned(
                    impl_trait,
                    "a stream consumer cannot take `impl Trait`; use a concrete type such as \
                     `Message<Order>`",
                ));
                return None;
            }
            Some(&*only.ty)
        }
        // `self` alone has been reported already; asking for an argument on top of it
        // would be noise.
        [] if has_receiver => None,
        [] => {
            errors.push(syn::Error::new(
                sig.paren_token.span.join(),
                format!(
                    "a stream consumer takes exactly one argument, the message: \
                     `async fn {}(msg: Message<T>)`",
                    sig.ident
                ),
            ));
            None
        }
        [_, extra @ ..] => {
            let mut tokens = TokenStream::new();
            for pat_type in extra {
                pat_type.to_tokens(&mut tokens);
            }
            errors.push(syn::Error::new_spanned(
                tokens,
                format!(
                    "a stream consumer takes exactly one argument, the message, but `{}` \
                     takes {}; use application state from the runtime builder instead of \
                     extra arguments",
                    sig.ident,
                    typed.len()
                ),
            ));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quote::quote;
    use syn::parse_quote;

    /// Every error message for `func`, or the handler's parts rendered as strings.
    fn run(func: ItemFn) -> Result<(String, String, Option<String>), Vec<String>> {
        check(&func)
            .map(|handler| {
                let Handler { ident, arg, output, .. } = handler;
                (ident.to_string(), quote!(#arg).to_string(), output.map(|ty| quote!(#ty).to_string()))
            })
            .map_err(|error| error.into_iter().map(|e| e.to_string()).collect())
    }

    /// Asserts one error containing `needle`.
    #[track_caller]
    fn assert_one(func: ItemFn, needle: &str) {
        let errors = run(func).expect_err("expected an error");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains(needle), "{errors:#?}");
    }

    #[test]
    fn accepts_a_plain_handler() {
        let (ident, arg, output) = run(parse_quote! {
            async fn charge(msg: Message<Order>) -> Result<(), HandlerError> { Ok(()) }
        })
        .expect("valid");
        assert_eq!(ident, "charge");
        assert_eq!(arg, "Message < Order >");
        assert_eq!(output.as_deref(), Some("Result < () , HandlerError >"));
    }

    #[test]
    fn accepts_unit_return_patterns_and_visibility() {
        let (_, arg, output) = run(parse_quote! {
            pub(crate) async fn charge(mut _msg: Message<Order>) {}
        })
        .expect("valid");
        assert_eq!(arg, "Message < Order >");
        assert_eq!(output, None);
    }

    #[test]
    fn the_form_follows_the_argument() {
        let form = |func: ItemFn| check(&func).map(|h| h.form).map_err(|e| e.to_string());
        assert_eq!(
            form(parse_quote!(
                async fn f(m: Message<Order>) {}
            )),
            Ok(Form::One)
        );
        assert_eq!(
            form(parse_quote!(
                async fn f(b: Vec<Message<Order>>) {}
            )),
            Ok(Form::Batch)
        );
        assert_eq!(
            form(parse_quote!(
                async fn f(b: std::vec::Vec<Message<Order>>) {}
            )),
            Ok(Form::Batch)
        );
        // Left to the trait bound, which explains what a batch takes.
        assert_eq!(
            form(parse_quote!(
                async fn f(b: Vec<String>) {}
            )),
            Ok(Form::Batch)
        );
        assert_eq!(
            form(parse_quote!(
                async fn f(b: VecDeque<Message<Order>>) {}
            )),
            Ok(Form::One)
        );
    }

    #[test]
    fn rejects_non_async() {
        assert_one(
            parse_quote!(
                fn charge(msg: Message<Order>) {}
            ),
            "a stream consumer must be an `async fn`",
        );
    }

    #[test]
    fn rejects_const_unsafe_and_extern() {
        assert_one(
            parse_quote!(
                async unsafe fn charge(msg: Message<Order>) {}
            ),
            "cannot be an `unsafe fn`",
        );
        assert_one(
            parse_quote!(
                const async fn charge(msg: Message<Order>) {}
            ),
            "cannot be a `const fn`",
        );
        assert_one(
            parse_quote!(
                async extern "C" fn charge(msg: Message<Order>) {}
            ),
            "cannot declare an ABI",
        );
    }

    #[test]
    fn rejects_generics_and_where_clauses() {
        assert_one(
            parse_quote!(
                async fn charge<T>(msg: Message<T>) {}
            ),
            "cannot be generic",
        );
        assert_one(
            parse_quote!(
                async fn charge<'a>(msg: Message<&'a str>) {}
            ),
            "cannot be generic",
        );
        assert_one(
            parse_quote!(
                async fn charge(msg: Message<Order>)
                where
                    Order: Send,
                {
                }
            ),
            "cannot have a `where` clause",
        );
    }

    #[test]
    fn rejects_self() {
        assert_one(
            parse_quote!(
                async fn charge(&self, msg: Message<Order>) {}
            ),
            "cannot take `self`",
        );
        assert_one(
            parse_quote!(
                async fn charge(self) {}
            ),
            "cannot take `self`",
        );
    }

    #[test]
    fn rejects_wrong_arity() {
        assert_one(
            parse_quote!(
                async fn charge() {}
            ),
            "takes exactly one argument, the message: `async fn charge(msg: Message<T>)`",
        );
        assert_one(
            parse_quote!(
                async fn charge(msg: Message<Order>, db: Db, cache: Cache) {}
            ),
            "but `charge` takes 3",
        );
    }

    #[test]
    fn rejects_impl_trait_argument() {
        assert_one(
            parse_quote!(
                async fn charge(msg: impl Sized) {}
            ),
            "cannot take `impl Trait`",
        );
    }

    #[test]
    fn reports_every_problem_together() {
        let errors = run(parse_quote! {
            unsafe fn charge<T>(&self, a: T, b: T) {}
        })
        .expect_err("invalid");
        assert_eq!(errors.len(), 5, "{errors:#?}");
    }
}
