//! `#[periodic(...)]`: parsing its arguments, checking the function, writing the
//! registration. The same rules as `#[stream_consumer]`: typed literals validated at compile
//! time (the cron expression with the runtime's own parser, croner), every error at once and
//! spanned on its token, the function emitted unchanged, generated code naming only
//! `#krate::__private::...` and `::core::...`.

use proc_macro2::{Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned as _;
use syn::{Expr, FnArg, Item, ItemFn, Lit, LitBool, LitStr, Meta, MetaNameValue, Path, ReturnType, Token, Type};

use crate::args::{literal, parse_crate, strip_groups, unknown_key};
use crate::Errors;

/// The keys `#[periodic(...)]` accepts, in the order error messages list them.
const KEYS: [&str; 5] = ["cron", "stream", "name", "catch_up", "crate"];

/// The arguments of one `#[periodic(...)]`, validated.
pub(crate) struct PeriodicArgs {
    /// `cron = "..."`: a cron expression croner parses.
    pub(crate) cron: LitStr,
    /// `stream = "..."`: where the ticks are published.
    pub(crate) stream: LitStr,
    /// `name = "..."`: the job's name; `None`: the fn's path.
    pub(crate) name: Option<LitStr>,
    /// `catch_up = true | false`; `None` keeps the runtime's default.
    pub(crate) catch_up: Option<LitBool>,
    /// `crate = path`.
    pub(crate) krate: Option<Path>,
}

/// Parses the tokens inside `#[periodic(...)]`.
pub(crate) fn parse(args: TokenStream) -> syn::Result<PeriodicArgs> {
    let metas = Punctuated::<Meta, Token![,]>::parse_terminated.parse2(args)?;
    from_metas(metas)
}

fn example(key: &str) -> &'static str {
    match key {
        "cron" => "cron = \"0 */5 * * * *\"",
        "stream" => "stream = \"reports\"",
        "name" => "name = \"reports::hourly\"",
        "catch_up" => "catch_up = true",
        _ => "crate = my_streamx",
    }
}

fn from_metas(metas: Punctuated<Meta, Token![,]>) -> syn::Result<PeriodicArgs> {
    let mut errors = Errors::default();
    let mut seen: Vec<&'static str> = Vec::new();
    let (mut cron, mut stream, mut name, mut catch_up, mut krate) = (None, None, None, None, None);
    for meta in &metas {
        let path = meta.path();
        let Some(key) = path.get_ident().and_then(|ident| KEYS.into_iter().find(|k| ident == k)) else {
            errors.push(unknown_key(path, &KEYS));
            continue;
        };
        if seen.contains(&key) {
            errors.push(syn::Error::new_spanned(path, format!("duplicate argument `{key}`")));
            continue;
        }
        seen.push(key);
        let value = match meta {
            Meta::NameValue(MetaNameValue { value, .. }) => strip_groups(value),
            _ => {
                errors.push(syn::Error::new_spanned(meta, format!("expected `{}`", example(key))));
                continue;
            }
        };
        match key {
            "cron" => cron = errors.record(cron_expr(value)),
            "stream" => stream = errors.record(non_empty(value, key)),
            "name" => name = errors.record(non_empty(value, key)),
            "catch_up" => catch_up = errors.record(boolean(value)),
            _ => krate = errors.record(parse_crate(value)),
        }
    }
    for key in ["cron", "stream"] {
        if !seen.contains(&key) {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!("missing required argument `{key}`, e.g. `#[periodic({})]`", example(key)),
            ));
        }
    }
    errors.finish()?;
    match (cron, stream) {
        (Some(cron), Some(stream)) => Ok(PeriodicArgs { cron, stream, name, catch_up, krate }),
        // Unreachable: a missing or invalid `cron`/`stream` has recorded an error above.
        _ => Err(syn::Error::new(Span::call_site(), "`cron` and `stream` are required")),
    }
}

fn string(value: &Expr, key: &str) -> syn::Result<LitStr> {
    match literal(value) {
        Some(Lit::Str(lit)) => Ok(lit.clone()),
        _ => {
            Err(syn::Error::new_spanned(value, format!("expected string literal for `{key}`, e.g. `{}`", example(key))))
        }
    }
}

fn non_empty(value: &Expr, key: &str) -> syn::Result<LitStr> {
    let lit = string(value, key)?;
    if lit.value().is_empty() {
        return Err(syn::Error::new(lit.span(), format!("`{key}` must not be empty")));
    }
    Ok(lit)
}

/// A cron expression croner parses (the runtime parses it the same way).
fn cron_expr(value: &Expr) -> syn::Result<LitStr> {
    let lit = string(value, "cron")?;
    let text = lit.value();
    if let Err(e) = text.parse::<croner::Cron>() {
        return Err(syn::Error::new(
            lit.span(),
            format!(
                "invalid cron expression {text:?}: {e}; expected 5 fields (minute hour day-of-month month \
                 day-of-week), 6 with seconds first, or 7 with a year last, e.g. \"0 */5 * * * *\" (every five \
                 minutes, UTC)"
            ),
        ));
    }
    Ok(lit)
}

fn boolean(value: &Expr) -> syn::Result<LitBool> {
    match literal(value) {
        Some(Lit::Bool(lit)) => Ok(lit.clone()),
        _ => Err(syn::Error::new_spanned(value, "expected `true` or `false` for `catch_up`, e.g. `catch_up = true`")),
    }
}

/// What the generated code needs to know about the function.
struct Job<'a> {
    ident: &'a syn::Ident,
    /// The type of its argument (the tick), if it takes one.
    arg: Option<&'a Type>,
    /// Its return type; `None` for `()`.
    output: Option<&'a Type>,
}

/// Checks the function's shape: a free `async fn` without generics, taking nothing or the
/// tick.
fn check(func: &ItemFn) -> syn::Result<Job<'_>> {
    let sig = &func.sig;
    let mut errors = Errors::default();
    if let Some(token) = &sig.constness {
        errors.push(syn::Error::new_spanned(token, "a periodic job cannot be a `const fn`"));
    }
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            "a periodic job must be an `async fn`; add `async` before `fn`",
        ));
    }
    if let Some(token) = &sig.unsafety {
        errors.push(syn::Error::new_spanned(token, "a periodic job cannot be an `unsafe fn`"));
    }
    if let Some(abi) = &sig.abi {
        errors.push(syn::Error::new_spanned(abi, "a periodic job cannot declare an ABI; remove `extern`"));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(&sig.generics, "a periodic job cannot be generic"));
    }
    if let Some(variadic) = &sig.variadic {
        errors.push(syn::Error::new_spanned(variadic, "a periodic job cannot be variadic"));
    }
    let mut args = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(receiver) => errors.push(syn::Error::new_spanned(
                receiver,
                "a periodic job cannot take `self`; make it a free function (outside any `impl` block)",
            )),
            FnArg::Typed(pat_type) => args.push(&*pat_type.ty),
        }
    }
    if args.len() > 1 {
        errors.push(syn::Error::new_spanned(
            &sig.inputs,
            format!(
                "a periodic job takes no argument or the tick: `async fn {0}()` or `async fn {0}(tick: Tick)`",
                sig.ident
            ),
        ));
    }
    errors.finish()?;
    let output = match &sig.output {
        ReturnType::Default => None,
        ReturnType::Type(_, ty) => Some(&**ty),
    };
    Ok(Job { ident: &sig.ident, arg: args.first().copied(), output })
}

/// Whether `ty` is written `Result<...>` (any path ending in `Result`): the fallible form.
fn is_result(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    path.qself.is_none() && path.path.segments.last().is_some_and(|last| last.ident == "Result")
}

/// Expands `#[periodic(args)] item`.
pub(crate) fn periodic(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = errors.record(parse(args));
    let func: Option<ItemFn> = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => Some(func),
        Ok(other) => {
            errors.push(syn::Error::new(other.span(), "`#[periodic]` can only be applied to an `async fn`"));
            None
        }
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let job = func.as_ref().and_then(|func| errors.record(check(func)));
    match (errors.finish(), args, job) {
        (Ok(()), Some(args), Some(job)) => {
            let registration = registration(&args, &job);
            quote! {
                #item
                #registration
            }
        }
        (result, _, _) => {
            let errors = result.err().map(|error| error.to_compile_error());
            quote! {
                #item
                #errors
            }
        }
    }
}

/// The `const _: () = { ... };` block that registers the job.
fn registration(args: &PeriodicArgs, job: &Job<'_>) -> TokenStream {
    let default_krate: Path = syn::parse_quote!(::streamx);
    let krate = args.krate.as_ref().unwrap_or(&default_krate);
    let private = quote!(#krate::__private);
    let ident = job.ident;
    let tick = syn::Ident::new("__streamx_tick", Span::mixed_site());
    // Each check is spanned on the user's type, so a wrong one is reported there (with the
    // runtime's `on_unimplemented` note); the call is located at the argument's type too.
    let (arg_check, call) = match job.arg {
        Some(arg) => (
            Some(quote_spanned! {arg.span()=> #private::assert_periodic_arg::<#arg>(); }),
            quote_spanned! {arg.span()=> #ident(#private::periodic_arg::<#arg>(#tick)) },
        ),
        None => (None, quote! {{ let _ = #tick; #ident() }}),
    };
    let return_span = job.output.map_or(ident.span(), |output| output.span());
    let fallible = job.output.is_some_and(is_result);
    let return_check = match job.output {
        // `impl Trait` cannot be named in a turbofish; `invoke_periodic` still checks the bound.
        Some(Type::ImplTrait(_)) => None,
        Some(output) if fallible => {
            Some(quote_spanned! {return_span=> #private::assert_periodic_result::<#output>(); })
        }
        Some(output) => Some(quote_spanned! {return_span=> #private::assert_periodic_payload::<#output>(); }),
        None => None,
    };
    // The output type is named, so a wrong one fails the same bound on the same tokens as
    // the assertion, and is reported once.
    let output = match job.output {
        Some(Type::ImplTrait(_)) => quote!(_),
        Some(output) => quote!(#output),
        None => quote!(()),
    };
    let invoke = if fallible {
        quote_spanned! {return_span=> #private::invoke_periodic_result::<_, #output>(#call) }
    } else {
        quote_spanned! {return_span=> #private::invoke_periodic::<_, #output>(#call) }
    };
    let name = match &args.name {
        Some(name) => quote!(#name),
        None => {
            let fn_name = ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #fn_name))
        }
    };
    let cron = &args.cron;
    let stream = &args.stream;
    let catch_up = args.catch_up.as_ref().map(|on| quote!(.catch_up(#on)));
    quote! {
        const _: () = {
            fn __streamx_periodic(#tick: #private::Tick) -> #private::PeriodicFuture {
                #arg_check
                #return_check
                #invoke
            }

            #private::inventory::submit! {
                #private::PeriodicRegistration::new(
                    #name,
                    #cron,
                    #stream,
                    #private::SourceLocation::new(::core::file!(), ::core::line!(), ::core::column!()),
                    __streamx_periodic,
                )
                #catch_up
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn squash(text: &str) -> String {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    }

    fn expand(args: TokenStream, item: TokenStream) -> String {
        periodic(args, item).to_string()
    }

    #[test]
    fn expansion_with_the_tick_and_a_result() {
        let out = squash(&expand(
            quote!(cron = "0 */5 * * * *", stream = "reports", catch_up = true),
            quote!(
                async fn report(tick: Tick) -> Result<Report, String> {
                    todo!()
                }
            ),
        ));
        for expected in [
            "fn__streamx_periodic(__streamx_tick:::streamx::__private::Tick)->::streamx::__private::PeriodicFuture",
            "::streamx::__private::invoke_periodic_result::<_,Result<Report,String>>(report(::streamx::__private::periodic_arg::<Tick>(__streamx_tick)))",
            "::streamx::__private::PeriodicRegistration::new(::core::concat!(::core::module_path!(),\"::\",\"report\"),\"0*/5****\",\"reports\",",
            ".catch_up(true)",
        ] {
            assert!(out.contains(expected), "{expected} missing from {out}");
        }
    }

    #[test]
    fn expansion_without_argument_nor_result() {
        let out = squash(&expand(
            quote!(cron = "* * * * *", stream = "s", name = "beat", crate = sx),
            quote!(
                async fn beat() -> u64 {
                    1
                }
            ),
        ));
        assert!(out.contains("sx::__private::invoke_periodic::<_,u64>({let_=__streamx_tick;beat()})"), "{out}");
        assert!(out.contains("PeriodicRegistration::new(\"beat\","), "{out}");
        assert!(!out.contains("catch_up"), "{out}");
        assert!(!out.contains(":: streamx") && !out.contains("::streamx"), "{out}");
    }

    #[test]
    fn every_error_is_reported_together_and_the_fn_is_kept() {
        let item = quote!(
            fn f(a: u8, b: u8) {}
        );
        let out =
            expand(quote!(cron = "61 * * * *", stream = "", catch_up = 1, every = "1s", cron = "x"), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert!(!out.contains("const _"), "{out}");
        for message in [
            "invalid cron expression \\\"61 * * * *\\\"",
            "`stream` must not be empty",
            "expected `true` or `false` for `catch_up`",
            "unknown argument `every`; expected one of: `cron`, `stream`, `name`, `catch_up`, `crate`",
            "duplicate argument `cron`",
            "must be an `async fn`",
            "takes no argument or the tick",
        ] {
            assert!(out.contains(message), "{message:?} missing from {out}");
        }
    }

    #[test]
    fn cron_and_stream_are_required() {
        let out = expand(
            quote!(),
            quote!(
                async fn f() {}
            ),
        );
        assert!(out.contains("missing required argument `cron`"), "{out}");
        assert!(out.contains("missing required argument `stream`"), "{out}");
    }
}
