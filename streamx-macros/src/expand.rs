//! Code generation for `#[stream_consumer]`.
//!
//! The user's function is always emitted first, unchanged. On success a
//! `const _: () = { ... };` block follows it with a trampoline, the trait-bound checks of
//! the signature and the `inventory` registration; on failure the combined errors follow
//! it instead. Generated code names nothing but `#krate::__private::...` and `::core::...`.
//!
//! Only settings the user wrote are emitted, as setters on the runtime's defaults
//! (`Backoff::DEFAULT.with_multiplier(..)`), so the macro holds no copy of any default.

use proc_macro2::{Literal, Span, TokenStream};
use quote::{quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned as _;
use syn::{Item, ItemFn};

use crate::args::{self, CodecArg, ConsumerArgs, Dlq, Spanned, Start};
use crate::signature::{self, Form, Handler};
use crate::Errors;

/// Expands `#[stream_consumer(args)] item`.
pub(crate) fn stream_consumer(args: TokenStream, item: TokenStream) -> TokenStream {
    let mut errors = Errors::default();
    let args = errors.record(args::parse(args));

    let func: Option<ItemFn> = match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(func)) => Some(func),
        Ok(other) => {
            errors
                .push(syn::Error::new(item_span(&other), "`#[stream_consumer]` can only be applied to an `async fn`"));
            None
        }
        Err(error) => {
            errors.push(error);
            None
        }
    };
    let handler = func.as_ref().and_then(|func| errors.record(signature::check(func)));
    if let (Some(args), Some(handler)) = (&args, &handler) {
        batch_keys_need_a_batch(args, handler, &mut errors);
    }

    match (errors.finish(), args, handler) {
        (Ok(()), Some(args), Some(handler)) => {
            let registration = registration(&args, &handler);
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

/// `max_batch` and `batch_wait` size the batches of a batch handler: on a one-message
/// handler they are a mistake, reported on their values.
fn batch_keys_need_a_batch(args: &ConsumerArgs, handler: &Handler<'_>, errors: &mut Errors) {
    if handler.form == Form::Batch {
        return;
    }
    let spans = [
        ("max_batch", args.max_batch.as_ref().map(|m| m.span)),
        ("batch_wait", args.batch_wait.as_ref().map(|w| w.span)),
    ];
    for (key, span) in spans {
        if let Some(span) = span {
            errors.push(syn::Error::new(
                span,
                format!(
                    "`{key}` applies to batch handlers only, which take `Vec<Message<T>>`; `{}` takes one message",
                    handler.ident
                ),
            ));
        }
    }
}

/// The span to blame when the attribute is put on something other than a function: the
/// item's keyword (`struct`, `impl`, ...), or the whole item if it has none.
fn item_span(item: &Item) -> Span {
    match item {
        Item::Struct(item) => item.struct_token.span,
        Item::Enum(item) => item.enum_token.span,
        Item::Impl(item) => item.impl_token.span,
        Item::Mod(item) => item.mod_token.span,
        Item::Trait(item) => item.trait_token.span,
        Item::Static(item) => item.static_token.span,
        Item::Const(item) => item.const_token.span,
        other => other.span(),
    }
}

/// The `const _: () = { ... };` block that registers `handler`.
fn registration(args: &ConsumerArgs, handler: &Handler<'_>) -> TokenStream {
    let default_krate;
    let krate = match &args.krate {
        Some(path) => path,
        None => {
            default_krate = syn::parse_quote!(::streamx);
            &default_krate
        }
    };
    let private = quote!(#krate::__private);
    let ident = handler.ident;

    // Mixed-site hygiene keeps this parameter from shadowing the user's function, and the
    // unusual name keeps a user's `const delivery` from turning it into a constant pattern.
    let delivery = syn::Ident::new("__streamx_delivery", Span::mixed_site());

    // The signature is checked by trait bounds, each spanned on the user's token so the
    // error (with the runtime's `on_unimplemented` note) points at the offending type:
    // - `assert_handler_arg::<Arg>()` on the argument type;
    // - `assert_handler_return::<Ret>()` on the return type (the name when it is `()`);
    // - `invoke` itself requires the same bounds. Its argument type is given in the
    //   turbofish and the call is spanned on the return type, so a failing bound of
    //   `invoke` has the same predicate and span as the matching assertion, and rustc
    //   reports it once. This only works within one body, hence the assertions live in
    //   the trampoline (they are empty `const fn`s).
    //
    // A batch handler (`Vec<...>` argument) has the same checks and call under batch names.
    let (assert_arg, assert_return, invoke_fn, constructor, input, outcome) = match handler.form {
        Form::One => (
            quote!(assert_handler_arg),
            quote!(assert_handler_return),
            quote!(invoke),
            quote!(new),
            quote!(Delivery),
            quote!(Outcome),
        ),
        Form::Batch => (
            quote!(assert_batch_arg),
            quote!(assert_batch_return),
            quote!(invoke_batch),
            quote!(batch),
            quote!(Deliveries),
            quote!(Outcomes),
        ),
    };
    let arg = handler.arg;
    let arg_check = quote_spanned! {arg.span()=>
        #private::#assert_arg::<#arg>();
    };
    let return_span = handler.output.map_or(ident.span(), |output| output.span());
    let return_check = match handler.output {
        // `impl Trait` cannot be named in a turbofish; `invoke` still checks the bound.
        Some(syn::Type::ImplTrait(_)) => None,
        Some(output) => Some(quote_spanned! {return_span=>
            #private::#assert_return::<#output>();
        }),
        None => Some(quote_spanned! {return_span=>
            #private::#assert_return::<()>();
        }),
    };
    let invoke = match handler.form {
        Form::One => quote_spanned! {return_span=>
            #private::#invoke_fn::<_, #arg, _>(#ident, #delivery)
        },
        // The return type is named, so a wrong one fails the same bound on the same tokens
        // as the assertion, and is reported once.
        Form::Batch => {
            let output = match handler.output {
                Some(syn::Type::ImplTrait(_)) => quote!(_),
                Some(output) => quote!(#output),
                None => quote!(()),
            };
            quote_spanned! {return_span=>
                #private::#invoke_fn::<_, #arg, _, #output>(#ident, #delivery)
            }
        }
    };

    let name = match &args.name {
        Some(name) => quote!(#name),
        None => {
            let fn_name = ident.unraw().to_string();
            quote!(::core::concat!(::core::module_path!(), "::", #fn_name))
        }
    };
    let stream = &args.stream;
    let group = &args.group;
    let setters = setters(args, &private);
    let backoff_check = args.backoff.as_ref().and_then(|backoff| backoff_bound_check(&backoff.value, &private));

    quote! {
        const _: () = {
            fn __streamx_handler(
                #delivery: #private::#input,
            ) -> #private::BoxFuture<'static, #private::#outcome> {
                #arg_check
                #return_check
                #invoke
            }

            #private::inventory::submit! {
                #private::Registration::#constructor(
                    #name,
                    #stream,
                    #group,
                    #private::SourceLocation::new(
                        ::core::file!(),
                        ::core::line!(),
                        ::core::column!(),
                    ),
                    __streamx_handler,
                )
                #setters
            }

            #backoff_check
        };
    }
}

/// The chained setter calls for the optional settings the user wrote, in a fixed order.
fn setters(args: &ConsumerArgs, private: &TokenStream) -> TokenStream {
    let mut out = TokenStream::new();
    if args.topic {
        out.extend(quote!(.as_topic()));
    }
    if let Some(shards) = &args.shards {
        let value = spanned(Literal::u32_unsuffixed(shards.value), shards.span);
        out.extend(quote!(.shards(#value)));
    }
    if let Some(ordered) = &args.ordered {
        let on = syn::LitBool::new(ordered.value, ordered.span);
        out.extend(quote!(.ordered(#on)));
    }
    if let Some(consumer) = &args.consumer {
        out.extend(quote!(.consumer_name(#consumer)));
    }
    if let Some(concurrency) = &args.concurrency {
        let value = usize_lit(concurrency);
        out.extend(quote!(.concurrency(#value)));
    }
    if let Some(batch_size) = &args.batch_size {
        let value = usize_lit(batch_size);
        out.extend(quote!(.batch_size(#value)));
    }
    if let Some(readers) = &args.readers {
        let value = usize_lit(readers);
        out.extend(quote!(.readers(#value)));
    }
    if let Some(block) = &args.block {
        let value = duration(private, block.value, block.span);
        out.extend(quote!(.block(#value)));
    }
    if let Some(middleware) = &args.middleware {
        // Each item checked where it is written: a value that is not a middleware is an
        // error spanned on it.
        let layers = middleware.value.iter().map(|path| {
            let span = path.span();
            quote_spanned!(span=> #private::static_layer(&#path))
        });
        out.extend(quote!(.middleware(&[#(#layers),*])));
    }
    if let Some(codec) = &args.codec {
        let variant = match codec.value {
            CodecArg::Json => quote_spanned!(codec.span=> Json),
            CodecArg::MsgPack => quote_spanned!(codec.span=> MsgPack),
        };
        out.extend(quote!(.codec(#private::Codec::#variant)));
    }
    if let Some(start) = &args.start {
        let value = match &start.value {
            Start::Beginning => quote!(#private::StartFrom::Beginning),
            Start::New => quote!(#private::StartFrom::New),
            Start::Id(id) => {
                let id = spanned(Literal::string(id.as_str()), start.span);
                quote!(#private::StartFrom::Id(#id))
            }
        };
        out.extend(quote!(.start(#value)));
    }
    if let Some(max_retries) = &args.max_retries {
        let value = spanned(Literal::u32_unsuffixed(max_retries.value), max_retries.span);
        out.extend(quote!(.max_retries(#value)));
    }
    if let Some(backoff) = &args.backoff {
        let value = backoff_value(&backoff.value, private);
        out.extend(quote!(.backoff(#value)));
    }
    if let Some(dlq) = &args.dlq {
        let value = match &dlq.value {
            Dlq::Default => quote!(#private::DeadLetterTarget::Default),
            Dlq::Disabled => quote!(#private::DeadLetterTarget::Disabled),
            Dlq::Stream(name) => {
                let name = spanned(Literal::string(name.as_str()), dlq.span);
                quote!(#private::DeadLetterTarget::Stream(#name))
            }
        };
        out.extend(quote!(.dlq(#value)));
    }
    if let Some(dlq_max_len) = &args.dlq_max_len {
        let value = match dlq_max_len.value {
            Some(len) => {
                let len = spanned(Literal::u64_unsuffixed(len), dlq_max_len.span);
                quote!(::core::option::Option::Some(#len))
            }
            None => quote!(::core::option::Option::None),
        };
        out.extend(quote!(.dlq_max_len(#value)));
    }
    if let Some(max_batch) = &args.max_batch {
        let value = usize_lit(max_batch);
        out.extend(quote!(.max_batch(#value)));
    }
    if let Some(batch_wait) = &args.batch_wait {
        let value = duration(private, batch_wait.value, batch_wait.span);
        out.extend(quote!(.batch_wait(#value)));
    }
    if let Some(claim_idle) = &args.claim_idle {
        let value = duration(private, claim_idle.value, claim_idle.span);
        out.extend(quote!(.claim_idle(#value)));
    }
    if let Some(max_buffered_bytes) = &args.max_buffered_bytes {
        let value = usize_lit(max_buffered_bytes);
        out.extend(quote!(.max_buffered_bytes(#value)));
    }
    if let Some(max_payload_bytes) = &args.max_payload_bytes {
        let value = usize_lit(max_payload_bytes);
        out.extend(quote!(.max_payload_bytes(#value)));
    }
    if let Some(timeout) = &args.timeout {
        let value = duration(private, timeout.value, timeout.span);
        out.extend(quote!(.timeout(#value)));
    }
    if let Some(dedupe) = &args.dedupe {
        let value = duration(private, dedupe.value, dedupe.span);
        out.extend(quote!(.dedupe(#value)));
    }
    if let Some(rate_limit) = &args.rate_limit {
        let (max, ms) = rate_limit.value;
        let max = spanned(Literal::u32_unsuffixed(max), rate_limit.span);
        let per = duration(private, ms, rate_limit.span);
        out.extend(quote!(.rate_limit(#private::RateLimit::new(#max, #per))));
    }
    if let Some(retention) = &args.retention {
        let r = &retention.value;
        let mut value = quote!(#private::Retention::new());
        if let Some(len) = &r.max_len {
            let len = spanned(Literal::u64_unsuffixed(len.value), len.span);
            value.extend(quote!(.max_len(#len)));
        }
        if let Some(age) = &r.max_age_ms {
            let age = duration(private, age.value, age.span);
            value.extend(quote!(.max_age(#age)));
        }
        if let Some(drop) = &r.drop_unread {
            let drop = syn::LitBool::new(drop.value, drop.span);
            value.extend(quote!(.drop_unread(#drop)));
        }
        out.extend(quote!(.retention(#value)));
    }
    if let Some(delete_on_ack) = &args.delete_on_ack {
        let on = syn::LitBool::new(delete_on_ack.value, delete_on_ack.span);
        out.extend(quote!(.delete_on_ack(#on)));
    }
    out
}

/// `Backoff::DEFAULT` with a `const` setter for each sub-key the user wrote, so the ones
/// left out keep the runtime's defaults.
fn backoff_value(backoff: &args::Backoff, private: &TokenStream) -> TokenStream {
    let mut out = quote!(#private::Backoff::DEFAULT);
    if let Some(initial) = &backoff.initial_ms {
        let value = duration(private, initial.value, initial.span);
        out.extend(quote!(.with_initial(#value)));
    }
    if let Some(multiplier) = &backoff.multiplier {
        let value = spanned(Literal::f64_suffixed(multiplier.value), multiplier.span);
        out.extend(quote!(.with_multiplier(#value)));
    }
    if let Some(max) = &backoff.max_ms {
        let value = duration(private, max.value, max.span);
        out.extend(quote!(.with_max(#value)));
    }
    out
}

/// When exactly one of `initial` and `max` is written, a compile-time assertion that it is
/// compatible with the runtime's default for the other, spanned on the user's token. (A
/// pair the user wrote is compared by the parser; the multiplier is validated there too.)
fn backoff_bound_check(backoff: &args::Backoff, private: &TokenStream) -> Option<TokenStream> {
    let show = |ms: u64| humantime::format_duration(std::time::Duration::from_millis(ms));
    let (span, message) = match (&backoff.initial_ms, &backoff.max_ms) {
        (Some(initial), None) => (
            initial.span,
            format!(
                "backoff `initial` ({}) must not be greater than the runtime's default `max` \
                 (`Backoff::DEFAULT.max`); set `max` too",
                show(initial.value)
            ),
        ),
        (None, Some(max)) => (
            max.span,
            format!(
                "backoff `max` ({}) must not be less than the runtime's default `initial` \
                 (`Backoff::DEFAULT.initial`); set `initial` too",
                show(max.value)
            ),
        ),
        _ => return None,
    };
    let value = backoff_value(backoff, private);
    let message = Literal::string(&message);
    Some(quote_spanned! {span=>
        const _: () = ::core::assert!(#value.is_valid(), #message);
    })
}

/// `Duration::from_millis(ms)`, the literal spanned on the user's token.
fn duration(private: &TokenStream, ms: u64, span: Span) -> TokenStream {
    let ms = spanned(Literal::u64_unsuffixed(ms), span);
    quote!(#private::Duration::from_millis(#ms))
}

/// An unsuffixed `usize` literal spanned on the user's token.
fn usize_lit(value: &Spanned<usize>) -> Literal {
    spanned(Literal::usize_unsuffixed(value.value), value.span)
}

/// `literal` with `span`.
fn spanned(mut literal: Literal, span: Span) -> Literal {
    literal.set_span(span);
    literal
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expands and renders the output as a string.
    fn expand(args: TokenStream, item: TokenStream) -> String {
        stream_consumer(args, item).to_string()
    }

    /// Removes all whitespace, so assertions do not depend on token spacing.
    fn squash(text: &str) -> String {
        text.chars().filter(|c| !c.is_whitespace()).collect()
    }

    #[test]
    fn basic_expansion() {
        let out = squash(&expand(
            quote!(stream = "orders", group = "billing"),
            quote!(
                async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
                    Ok(())
                }
            ),
        ));
        let expected = squash(
            &quote! {
                async fn charge(msg: Message<Order>) -> Result<(), HandlerError> {
                    Ok(())
                }
                const _: () = {
                    fn __streamx_handler(
                        __streamx_delivery: ::streamx::__private::Delivery,
                    ) -> ::streamx::__private::BoxFuture<'static, ::streamx::__private::Outcome> {
                        ::streamx::__private::assert_handler_arg::<Message<Order> >();
                        ::streamx::__private::assert_handler_return::<Result<(), HandlerError> >();
                        ::streamx::__private::invoke::<_, Message<Order>, _>(charge, __streamx_delivery)
                    }
                    ::streamx::__private::inventory::submit! {
                        ::streamx::__private::Registration::new(
                            ::core::concat!(::core::module_path!(), "::", "charge"),
                            "orders",
                            "billing",
                            ::streamx::__private::SourceLocation::new(
                                ::core::file!(),
                                ::core::line!(),
                                ::core::column!(),
                            ),
                            __streamx_handler,
                        )
                    }
                };
            }
            .to_string(),
        );
        assert_eq!(out, expected);
    }

    #[test]
    fn every_setter() {
        let out = squash(&expand(
            quote!(
                stream = "orders",
                group = "billing",
                consumer = "w1",
                name = "charge",
                concurrency = 8,
                batch_size = 100,
                block = "2s",
                start = "begin",
                max_retries = 5,
                backoff(multiplier = 3),
                dlq = "dead",
                dlq_max_len = 500,
                claim_idle = "30s",
                max_buffered_bytes = "64MiB",
                max_payload_bytes = 4096,
                timeout = "1m"
            ),
            quote!(
                async fn charge(msg: Message<Order>) {}
            ),
        ));
        let expected = squash(
            r#"::streamx::__private::Registration::new("charge", "orders", "billing",
                ::streamx::__private::SourceLocation::new(::core::file!(), ::core::line!(), ::core::column!(),),
                __streamx_handler,)
            .consumer_name("w1")
            .concurrency(8)
            .batch_size(100)
            .block(::streamx::__private::Duration::from_millis(2000))
            .start(::streamx::__private::StartFrom::Beginning)
            .max_retries(5)
            .backoff(::streamx::__private::Backoff::DEFAULT.with_multiplier(3f64))
            .dlq(::streamx::__private::DeadLetterTarget::Stream("dead"))
            .dlq_max_len(::core::option::Option::Some(500))
            .claim_idle(::streamx::__private::Duration::from_millis(30000))
            .max_buffered_bytes(67108864)
            .max_payload_bytes(4096)
            .timeout(::streamx::__private::Duration::from_millis(60000))
            }"#,
        );
        assert!(out.contains(&expected), "{out}");
        assert!(out.contains("assert_handler_return::<()>()"), "{out}");
        assert!(!out.contains("is_valid"), "a multiplier alone needs no bound check: {out}");
    }

    #[test]
    fn backoff_emits_only_the_sub_keys_written() {
        let render = |args: TokenStream| {
            squash(&expand(
                args,
                quote!(
                    async fn f(m: Message<X>) {}
                ),
            ))
        };
        let out = render(quote!(stream = "s", group = "g", backoff()));
        assert!(out.contains(".backoff(::streamx::__private::Backoff::DEFAULT)"), "{out}");
        let out = render(quote!(stream = "s", group = "g", backoff(max = "1m", initial = "5ms", multiplier = 1.5)));
        let expected = ".backoff(::streamx::__private::Backoff::DEFAULT\
            .with_initial(::streamx::__private::Duration::from_millis(5))\
            .with_multiplier(1.5f64)\
            .with_max(::streamx::__private::Duration::from_millis(60000)))";
        assert!(out.contains(&squash(expected)), "{out}");
        assert!(!out.contains("is_valid"), "the parser compared both bounds: {out}");
        assert!(!out.contains("from_millis(1000)") && !out.contains("from_millis(30000)"), "{out}");
    }

    #[test]
    fn a_single_backoff_bound_is_checked_against_the_runtime_default() {
        let render = |args: TokenStream| {
            expand(
                args,
                quote!(
                    async fn f(m: Message<X>) {}
                ),
            )
        };
        let out = render(quote!(stream = "s", group = "g", backoff(max = "500ms")));
        let check = squash(
            r#"const _: () = ::core::assert!(
                ::streamx::__private::Backoff::DEFAULT
                    .with_max(::streamx::__private::Duration::from_millis(500))
                    .is_valid(),"#,
        );
        assert!(squash(&out).contains(&check), "{out}");
        assert!(
            out.contains(
                "backoff `max` (500ms) must not be less than the runtime's default `initial` \
                 (`Backoff::DEFAULT.initial`); set `initial` too"
            ),
            "{out}"
        );
        let out = render(quote!(stream = "s", group = "g", backoff(initial = "1h", multiplier = 3)));
        let check = squash(
            r#"const _: () = ::core::assert!(
                ::streamx::__private::Backoff::DEFAULT
                    .with_initial(::streamx::__private::Duration::from_millis(3600000))
                    .with_multiplier(3f64)
                    .is_valid(),"#,
        );
        assert!(squash(&out).contains(&check), "{out}");
        assert!(
            out.contains(
                "backoff `initial` (1h) must not be greater than the runtime's default `max` \
                 (`Backoff::DEFAULT.max`); set `max` too"
            ),
            "{out}"
        );
    }

    #[test]
    fn start_and_dlq_variants() {
        let render = |args: TokenStream| {
            squash(&expand(
                args,
                quote!(
                    async fn f(m: Message<X>) {}
                ),
            ))
        };
        let out = render(quote!(stream = "s", group = "g", start = "new", dlq = true));
        assert!(out.contains(".start(::streamx::__private::StartFrom::New)"), "{out}");
        assert!(out.contains(".dlq(::streamx::__private::DeadLetterTarget::Default)"), "{out}");
        let out = render(quote!(stream = "s", group = "g", codec = "json"));
        assert!(out.contains(".codec(::streamx::__private::Codec::Json)"), "{out}");
        let out = render(quote!(stream = "s", group = "g", middleware = [audit, tenant::REQUIRE]));
        assert!(
            out.contains(
                ".middleware(&[::streamx::__private::static_layer(&audit),\
                 ::streamx::__private::static_layer(&tenant::REQUIRE)])"
            ),
            "{out}"
        );
        let out = render(quote!(stream = "s", group = "g", start = "5", dlq = false));
        assert!(out.contains(".start(::streamx::__private::StartFrom::Id(\"5\"))"), "{out}");
        assert!(out.contains(".dlq(::streamx::__private::DeadLetterTarget::Disabled)"), "{out}");
    }

    #[test]
    fn a_vec_argument_registers_a_batch_handler() {
        let out = squash(&expand(
            quote!(stream = "s", group = "g", max_batch = 50, batch_wait = "10ms"),
            quote!(
                async fn store(batch: Vec<Message<X>>) -> BatchOutcome {
                    BatchOutcome::new()
                }
            ),
        ));
        for expected in [
            "fn__streamx_handler(__streamx_delivery:::streamx::__private::Deliveries,)\
             ->::streamx::__private::BoxFuture<'static,::streamx::__private::Outcomes>",
            "::streamx::__private::assert_batch_arg::<Vec<Message<X>>>();",
            "::streamx::__private::assert_batch_return::<BatchOutcome>();",
            "::streamx::__private::invoke_batch::<_,Vec<Message<X>>,_,BatchOutcome>(store,__streamx_delivery)",
            "::streamx::__private::Registration::batch(",
            ".max_batch(50).batch_wait(::streamx::__private::Duration::from_millis(10))",
        ] {
            assert!(out.contains(expected), "{expected} missing from {out}");
        }
    }

    #[test]
    fn batch_keys_on_a_one_message_handler_are_errors() {
        let out = expand(
            quote!(stream = "s", group = "g", max_batch = 50, batch_wait = "10ms"),
            quote!(
                async fn f(m: Message<X>) {}
            ),
        );
        assert!(!out.contains("const _"), "{out}");
        assert!(out.contains("`max_batch` applies to batch handlers only"), "{out}");
        assert!(out.contains("`batch_wait` applies to batch handlers only"), "{out}");
    }

    #[test]
    fn renamed_crate_is_the_only_path_used() {
        let out = expand(
            quote!(crate = sx, stream = "s", group = "g", block = "1s"),
            quote!(
                async fn f(m: Message<X>) {}
            ),
        );
        assert!(squash(&out).contains("sx::__private::invoke::<_,Message<X>,_>(f,__streamx_delivery)"), "{out}");
        assert!(!out.contains(":: streamx"), "{out}");
    }

    #[test]
    fn raw_identifiers_are_registered_without_prefix() {
        let out = squash(&expand(
            quote!(stream = "s", group = "g"),
            quote!(
                async fn r#match(m: Message<X>) {}
            ),
        ));
        assert!(out.contains(r#"::core::module_path!(),"::","match")"#), "{out}");
        assert!(out.contains("(r#match,__streamx_delivery)"), "{out}");
    }

    #[test]
    fn errors_keep_the_function() {
        let item = quote!(
            fn charge() {}
        );
        let out = expand(quote!(stream = ""), item.clone());
        assert!(out.starts_with(&item.to_string()), "{out}");
        assert!(!out.contains("const _"), "{out}");
        for message in [
            "`stream` must not be empty",
            "missing required argument `group`",
            "must be an `async fn`",
            "takes exactly one argument",
        ] {
            assert!(out.contains(message), "{message:?} missing from {out}");
        }
        assert_eq!(out.matches("compile_error").count(), 4, "{out}");
    }

    #[test]
    fn rejects_non_functions() {
        let out = expand(
            quote!(stream = "s", group = "g"),
            quote!(
                struct S;
            ),
        );
        assert!(out.starts_with("struct S ;"), "{out}");
        assert!(out.contains("can only be applied to an `async fn`"), "{out}");
    }
}
