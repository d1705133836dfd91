"""Checks DCI messages against the standard's own schemas, patched when they are loaded.

The DCI facade checks every request it accepts against the OpenAPI 3.0.3 files of DCI
release 1.0.0, and its tests check every answer it gives the same way. The files are
vendored unchanged in `gateway/dci/spec/` (spdci/standards `release/yaml/`, commit
b4816e1). Search and txn status use the social file. Subscribe, unsubscribe and notify use
the core file. This module has no hand-written checks.

Taken literally, the files reject valid messages. The patch tables below correct this at
load time, as data (docs/dci.md, "Schemas"):

- P1: Three `$ref`s (the predicate's `attribute_value` and `expression2`, and the receipt's
  `beneficiaries`) point through another `$ref`, so they resolve nowhere. Each is rewritten
  to the component path it means.
- P2: The query shapes have no `required` lists, and an integer also matches `number`. As a
  result, `oneOf` rejects every expression query, every integer attribute value, and every
  string txn-status `attribute_value`. Every `oneOf` therefore becomes `anyOf`. To keep the
  precision that `anyOf` gives up, a value is checked against one branch only: the branch
  its message names. `header.is_msg_encrypted` picks the branch for `message`, `query_type`
  for `query`, `filter_type` for `filter`, `attribute_type` for `attribute_value`, and
  `txn_type` for `txn_status`.
- P3 and P4: The core file misspells `timesstamp` (UnSubscribeRequest) and `timesatmp`
  (UnSubscribeResponse), and it requires `sunscription_codes`. SubscriptionInfo requires
  properties that do not exist; its list becomes `[code, status, timestamp]`. The social
  file's `txn_type` enums say `subscibe`. The public compliance suite makes the same fixes
  to its own copy.

Schemas follow draft-4 rules, as OpenAPI 3.0 does, so any keyword beside a `$ref` is
ignored. The formats `date-time` and `uri` are checked, and so is OpenAPI's `int32` (a
whole number that fits in 32 bits). A problem gives where it is and which rule failed. It
never includes the failing value, because that value may be personal data.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import yaml  # type: ignore[import-untyped]
from jsonschema import Draft4Validator, FormatChecker, validators  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT4

SPEC_DIR = Path(__file__).parent / "spec"
FILES = {
    "social": "social_api_v1.0.0.yaml",
    "core": "registry_core_api_v1.0.0.yaml",
    "authz": "authz_core_api_v1.0.0.yaml",
    "jwks": "jwks_core_api_v1.0.0.yaml",
}
MAX_PROBLEMS = 20
TOO_DEEP = "nested too deeply"


class Problem(NamedTuple):
    """One way a message breaks the standard. `where` is a JSON path such as
    `message.search_request[0].search_criteria.query_type` ("" is the whole body).
    `message` names the failed rule and never includes the offending value."""

    where: str
    message: str


# ---------------------------------------------------------------------------------------
# Load-time patches. Each one states what the file says (`was`), and loading fails if the
# file says something else, so that a new release of the standard cannot go unnoticed.

_MESSAGE_0 = "/post/requestBody/content/application~1json/schema/properties/message/oneOf/0/"

# P1: refs that pass through a `$ref` (and so resolve nowhere) -> the component they mean.
_REF_PREFIXES: tuple[tuple[str, str, str], ...] = (
    ("social", "#/paths/~1registry~1search" + _MESSAGE_0, "#/components/schemas/SearchRequest/"),
    (
        "social",
        "#/paths/~1registry~1txn~1on-status" + _MESSAGE_0,
        "#/components/schemas/TxnStatusResponse/",
    ),
)

# P2: every `oneOf` becomes `anyOf`, including inside refs that name one.
_ONE_OF, _ANY_OF = "oneOf", "anyOf"

# P3: misspelled property names: (document, pointer to a `properties` object, was, now).
_RENAMES: tuple[tuple[str, str, str, str], ...] = (
    ("core", "/components/schemas/UnSubscribeRequest/properties", "timesstamp", "timestamp"),
    ("core", "/components/schemas/UnSubscribeResponse/properties", "timesatmp", "timestamp"),
)


class _Replace(NamedTuple):
    doc: str
    pointer: str  # the object holding `key`
    key: str
    was: object
    now: object


# P4: typo'd `required` lists and enums.
_REPLACEMENTS: tuple[_Replace, ...] = (
    _Replace(
        "core",
        "/components/schemas/UnSubscribeRequest",
        "required",
        ["transaction_id", "timestamp", "sunscription_codes"],
        ["transaction_id", "timestamp", "subscription_codes"],
    ),
    _Replace(
        "core",
        "/components/schemas/SubscriptionInfo",
        "required",
        ["subscription_code", "timestamp", "subscribe_criteria"],
        ["code", "status", "timestamp"],
    ),
    _Replace(
        "social",
        "/components/schemas/TxnStatusRequest/properties/txnstatus_request/properties/txn_type",
        "enum",
        ["search", "subscibe", "receipt"],
        ["search", "subscribe", "receipt"],
    ),
    _Replace(
        "social",
        "/components/schemas/TxnStatusResponse/properties/txnstatus_response/properties/txn_type",
        "enum",
        ["search", "subscibe", "receipt"],
        ["search", "subscribe", "receipt"],
    ),
)


# ---------------------------------------------------------------------------------------
# What each message is checked against: a schema, and the switches that choose an `anyOf`
# branch by a field the message itself sets (the precision P2 gives up).


@dataclass(frozen=True)
class _Choice:
    value: object  # the discriminator's value (compared with its JSON type)
    pointer: str  # the branch a value is checked against when the discriminator says `value`
    switches: tuple[_Switch, ...] = ()


@dataclass(frozen=True)
class _Switch:
    """At `at`, the `anyOf` of the schema at `holder` is decided by the discriminator `key`:
    the value is checked against the chosen branch alone. With no (known) discriminator, it
    must match one of the branches, as the plain `anyOf` says."""

    holder: str  # the schema object that carries the `anyOf`
    at: tuple[str, ...]  # where the value is, below the checked instance ("*": each item)
    key: tuple[str, ...]  # the discriminator, below the object that holds the value
    choices: tuple[_Choice, ...]  # one per branch of the `anyOf`
    default: object = None  # the discriminator's value when it is absent

    def choose(self, parent: object) -> _Choice | None:
        found: object = parent
        for step in self.key:
            found = found.get(step) if isinstance(found, dict) else None
        found = self.default if found is None else found
        return next(
            (c for c in self.choices if type(c.value) is type(found) and c.value == found),
            None,
        )


@dataclass(frozen=True)
class _Target:
    doc: str
    pointer: str
    switches: tuple[_Switch, ...] = ()


def _escape(path: str) -> str:
    return path.replace("~", "~0").replace("/", "~1")


def _request_body(path: str) -> str:
    return f"/paths/{_escape(path)}/post/requestBody/content/application~1json/schema"


def _default_response(path: str) -> str:
    return f"/paths/{_escape(path)}/post/responses/default/content/application~1json/schema"


def _schema(name: str) -> str:
    return f"/components/schemas/{name}"


def _by_branch(holder: str, at: tuple[str, ...], key: str, *values: str) -> _Switch:
    """A switch whose choices are the holder's branches, in the order the spec lists them."""
    choices = tuple(_Choice(v, f"{holder}/anyOf/{i}") for i, v in enumerate(values))
    return _Switch(holder, at, (key,), choices)


_QUERY_TYPES = ("expression", "idtype-value", "predicate")
_SEARCH_CRITERIA = "/properties/search_request/items/properties/search_criteria"
_S_QUERY = _by_branch(
    _schema("SearchRequest") + _SEARCH_CRITERIA + "/properties/query",
    ("search_request", "*", "search_criteria", "query"),
    "query_type",
    *_QUERY_TYPES,
)
_S_ATTRIBUTE_VALUE = _by_branch(
    _schema("TxnStatusRequest") + "/properties/txnstatus_request/properties/attribute_value",
    ("txnstatus_request", "attribute_value"),
    "attribute_type",
    "transaction_id",
    "reference_id_list",
    "correlation_id",
)
_S_TXN_STATUS = _by_branch(
    _schema("TxnStatusResponse") + "/properties/txnstatus_response/properties/txn_status",
    ("txnstatus_response", "txn_status"),
    "txn_type",
    "search",
    "receipt",
)
_C_QUERIES = tuple(  # RegistryQueries' branches, chosen by a sibling `filter_type`
    _Choice(t, _schema(name))
    for t, name in zip(
        _QUERY_TYPES,
        ("ExpTemplate", "IdentifierTypeValue", "ExpPredicateWithConditionList"),
        strict=True,
    )
)
_C_SUBSCRIBE_FILTER = _Switch(
    _schema("RegistryQueries"),
    ("subscribe_request", "*", "subscribe_criteria", "filter"),
    ("filter_type",),
    _C_QUERIES,
)
_C_SUBSCRIPTION_FILTER = _Switch(
    _schema("RegistryQueries"),
    ("subscribe_response", "*", "subscriptions", "*", "filter"),
    ("filter_type",),
    _C_QUERIES,
)


def _envelope(doc: str, pointer: str, payload: str, *inner: _Switch) -> _Target:
    """A `{signature, header, message}` envelope whose message is `payload`, or encrypted."""
    message = _Switch(
        holder=pointer + "/properties/message",
        at=("message",),
        key=("header", "is_msg_encrypted"),
        default=False,  # the spec's default for is_msg_encrypted
        choices=(
            _Choice(False, _schema(payload), inner),
            _Choice(True, _schema("EncryptedMessage")),
        ),
    )
    return _Target(doc, pointer, (message,))


_REQUESTS: Mapping[str, _Target] = {
    "/registry/search": _envelope(
        "social", _request_body("/registry/search"), "SearchRequest", _S_QUERY
    ),
    "/registry/sync/search": _envelope(
        "social", _request_body("/registry/sync/search"), "SearchRequest", _S_QUERY
    ),
    "/registry/txn/status": _envelope(
        "social", _request_body("/registry/txn/status"), "TxnStatusRequest", _S_ATTRIBUTE_VALUE
    ),
    "/registry/sync/txn/status": _envelope(
        "social",
        _request_body("/registry/sync/txn/status"),
        "TxnStatusRequest",
        _S_ATTRIBUTE_VALUE,
    ),
    "/registry/subscribe": _envelope(
        "core", _request_body("/registry/subscribe"), "SubscribeRequest", _C_SUBSCRIBE_FILTER
    ),
    "/registry/unsubscribe": _envelope(
        "core", _request_body("/registry/unsubscribe"), "UnSubscribeRequest"
    ),
}

_RESPONSES: Mapping[str, _Target] = {
    "sync-search": _envelope(
        "social", _default_response("/registry/sync/search"), "SearchResponse"
    ),
    "sync-txn-status": _envelope(
        "social",
        _default_response("/registry/sync/txn/status"),
        "TxnStatusResponse",
        _S_TXN_STATUS,
    ),
    "ack": _Target("social", "/components/responses/Response/content/application~1json/schema"),
    "on-search": _envelope("social", _request_body("/registry/on-search"), "SearchResponse"),
    "txn-on-status": _envelope(
        "social", _request_body("/registry/txn/on-status"), "TxnStatusResponse", _S_TXN_STATUS
    ),
    "on-subscribe": _envelope(
        "core", _request_body("/registry/on-subscribe"), "SubscribeResponse", _C_SUBSCRIPTION_FILTER
    ),
    "on-unsubscribe": _envelope(
        "core", _request_body("/registry/on-unsubscribe"), "UnSubscribeResponse"
    ),
    "notify": _envelope("core", _request_body("/registry/notify"), "NotifyEventRequest"),
}

_TOKEN = "/paths/~1oauth2~1client~1token/post"
_TOKEN_REQUEST = _Target(
    "authz", _TOKEN + "/requestBody/content/application~1x-www-form-urlencoded/schema"
)
_TOKEN_RESPONSE = _Target("authz", _TOKEN + "/responses/200/content/application~1json/schema")
_JWKS = _Target(
    "jwks", "/paths/~1.well-known~1jwks.json/get/responses/200/content/application~1json/schema"
)

REQUEST_PATHS = frozenset(_REQUESTS)
RESPONSE_KINDS = frozenset(_RESPONSES)


# ---------------------------------------------------------------------------------------
# Problems, worded without the instance.

_Path = tuple[str | int, ...]
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REQUIRED = re.compile(r"'[^'\\]*' is a required property")


def _where(path: _Path) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        elif _NAME.fullmatch(step):
            out += f".{step}" if out else step
        else:
            out += f"[{json.dumps(step)}]"
    return out


def _listed(values: object) -> str:
    names = values if isinstance(values, list) else [values]
    return ", ".join(repr(v) for v in names)


_SAY: dict[str, Callable[[Any], str]] = {
    "type": lambda v: f"is not of type {_listed(v)}",
    "enum": lambda v: f"is not one of {v!r}" if len(v) <= 8 else "is not one of the allowed values",
    "format": lambda v: f"is not a valid {v}",
    "pattern": lambda v: f"does not match {v!r}",
    "maxLength": lambda v: f"is longer than {v} characters",
    "minLength": lambda v: f"is shorter than {v} characters",
    "maximum": lambda v: f"is above the maximum of {v}",
    "minimum": lambda v: f"is below the minimum of {v}",
    "maxItems": lambda v: f"has more than {v} items",
    "minItems": lambda v: f"has fewer than {v} items",
    "anyOf": lambda v: "is not valid under any of the given schemas",
    "oneOf": lambda v: "is not valid under exactly one of the given schemas",
    "additionalProperties": lambda v: "has properties that are not allowed",
    "uniqueItems": lambda v: "has items that are not unique",
}


def _say(error: Any) -> str:
    """The failed rule, in words from the schema only (never the instance)."""
    rule, value = str(error.validator), error.validator_value
    if rule == "required":
        said = str(error.message)  # "'name' is a required property": the name is the schema's
        return said if _REQUIRED.fullmatch(said) else "a required property is missing"
    say = _SAY.get(rule)
    return say(value) if say else f"fails the {rule!r} rule"


# ---------------------------------------------------------------------------------------
# The checker.


class Schemas:
    """Validators for the DCI messages the facade takes and gives, built once by `load()`."""

    def __init__(self, validators: Mapping[tuple[str, str], Any]) -> None:
        self._validators = dict(validators)

    def request(self, path: str, body: object) -> list[Problem]:
        """What is wrong with a request body for one of the registry paths the facade serves
        (`REQUEST_PATHS`). An empty list means the body is valid. Any other path raises
        ValueError."""
        target = _REQUESTS.get(path)
        if target is None:
            raise ValueError(f"no DCI request schema for {path!r}")
        return self._problems(target, body)

    def response(self, kind: str, body: object) -> list[Problem]:
        """What is wrong with a body the facade gives (`RESPONSE_KINDS`): `sync-search`,
        `sync-txn-status` (the sync answers), `ack` (the async answer), and the callbacks
        `on-search`, `txn-on-status`, `on-subscribe`, `on-unsubscribe` and `notify`."""
        target = _RESPONSES.get(kind)
        if target is None:
            raise ValueError(f"no DCI response schema for {kind!r}")
        return self._problems(target, body)

    def token_request(self, form: Mapping[str, str]) -> list[Problem]:
        """What is wrong with an OAuth2 client-credentials token request form."""
        return self._problems(_TOKEN_REQUEST, dict(form))

    def token_response(self, body: object) -> list[Problem]:
        """What is wrong with a token endpoint's 200 answer."""
        return self._problems(_TOKEN_RESPONSE, body)

    def jwks(self, body: object) -> list[Problem]:
        """What is wrong with a `/.well-known/jwks.json` answer."""
        return self._problems(_JWKS, body)

    def _problems(self, target: _Target, body: object) -> list[Problem]:
        try:
            found = {
                Problem(_where(path), said)
                for path, said in self._check(target.doc, target.pointer, body, target.switches)
            }
        except RecursionError:
            return [Problem("", TOO_DEEP)]
        return sorted(found)[:MAX_PROBLEMS]

    def _check(
        self, doc: str, pointer: str, instance: object, switches: tuple[_Switch, ...]
    ) -> Iterator[tuple[_Path, str]]:
        """The instance's problems against one schema. The validators skip the `anyOf` of
        every switch's holder (see `load`), so a switched value is checked once, here."""
        for error in self._validators[doc, pointer].iter_errors(instance):
            yield tuple(error.absolute_path), _say(error)
        for switch in switches:
            for at, value, parent in _locate(instance, switch.at):
                choice = switch.choose(parent)
                if choice is not None:
                    for path, said in self._check(doc, choice.pointer, value, choice.switches):
                        yield at + path, said
                elif not any(self._valid(doc, c, value) for c in switch.choices):
                    yield at, _SAY[_ANY_OF](None)

    def _valid(self, doc: str, choice: _Choice, value: object) -> bool:
        return next(self._check(doc, choice.pointer, value, choice.switches), None) is None


def _locate(instance: object, at: tuple[str, ...]) -> Iterator[tuple[_Path, object, object]]:
    """Each value at `at` below `instance`: its path, the value, and the object holding it.
    This is where a validator descends too: through `properties`, and `items` of arrays."""
    found: list[tuple[_Path, object, object]] = [((), instance, None)]
    for step in at:
        below: list[tuple[_Path, object, object]] = []
        for path, value, _ in found:
            if step == "*" and isinstance(value, list):
                below.extend(((*path, i), item, value) for i, item in enumerate(value))
            elif step != "*" and isinstance(value, dict) and step in value:
                below.append(((*path, step), value[step], value))
        found = below
    yield from found


# ---------------------------------------------------------------------------------------
# Loading.


def _int32(instance: object) -> bool:
    if isinstance(instance, bool) or not isinstance(instance, int | float):
        return True
    return float(instance).is_integer() and -(2**31) <= instance < 2**31


def _format_checker() -> Any:
    # A KeyError here means rfc3339-validator or rfc3986-validator is missing, which would
    # let those formats pass unchecked. Refuse to start instead.
    checker = FormatChecker(formats=("date-time", "uri"))
    checker.checks("int32")(_int32)
    return checker


def _patched(doc: str, node: object) -> object:
    """P1 and P2 on one document's tree."""
    if isinstance(node, list):
        return [_patched(doc, item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, object] = {}
    for key, value in node.items():
        out[_ANY_OF if key == _ONE_OF else key] = (
            _ref(doc, value) if key == "$ref" and isinstance(value, str) else _patched(doc, value)
        )
    return out


def _ref(doc: str, ref: str) -> str:
    for where, old, new in _REF_PREFIXES:
        if where == doc and ref.startswith(old):
            ref = new + ref[len(old) :]
    return ref.replace(f"/{_ONE_OF}/", f"/{_ANY_OF}/")


def _at(document: object, pointer: str) -> dict[str, Any]:
    node = document
    for token in pointer.lstrip("/").split("/"):
        step = token.replace("~1", "/").replace("~0", "~")
        node = node[int(step)] if isinstance(node, list) else node[step]  # type: ignore[index]
    if not isinstance(node, dict):
        raise ValueError(f"{pointer} is not an object")
    return node


def _fixed(doc: str, document: object) -> object:
    """P1-P4 on one document, failing if the document is not as the patches expect."""
    refs = set(_refs(document))
    for _, old, _ in (p for p in _REF_PREFIXES if p[0] == doc):
        if not any(ref.startswith(old) for ref in refs):
            raise ValueError(f"{FILES[doc]}: no ref starts with {old}")
    document = _patched(doc, document)
    for _, pointer, was, now in (r for r in _RENAMES if r[0] == doc):
        holder = _at(document, pointer)
        if was not in holder or now in holder:
            raise ValueError(f"{FILES[doc]}: {pointer} has no {was!r} to rename")
        holder[now] = holder.pop(was)
    for edit in (r for r in _REPLACEMENTS if r.doc == doc):
        holder = _at(document, edit.pointer)
        if holder.get(edit.key) != edit.was:
            raise ValueError(f"{FILES[doc]}: {edit.pointer}/{edit.key} is not {edit.was!r}")
        holder[edit.key] = edit.now
    return document


def _inlined(document: object) -> object:
    """The document with every local `$ref` replaced by the very object it names.

    A validator resolves each `$ref` it meets through the registry on every request (a
    third of a search's validation time); the standard's documents have no recursive
    reference, so each can be put in place once. The target is shared, not copied, so a
    switch's holder (recognised by identity, see `load`) stays the same object wherever
    it is reached from. Draft 4 ignores a `$ref`'s siblings, so dropping them changes
    nothing."""
    done: dict[str, object] = {}

    def target(ref: str) -> object:
        if ref not in done:
            done[ref] = None  # a cycle would show as None: the documents have none
            done[ref] = walk(_pointed(document, ref))
        return done[ref]

    def walk(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#"):
                return target(ref)
            for key, value in node.items():
                node[key] = walk(value)
        elif isinstance(node, list):
            node[:] = [walk(item) for item in node]
        return node

    walk(document)
    return document


def _pointed(document: object, ref: str) -> object:
    node = document
    for part in ref.removeprefix("#").strip("/").split("/") if ref != "#" else ():
        key = part.replace("~1", "/").replace("~0", "~")
        node = node[int(key)] if isinstance(node, list) else node[key]  # type: ignore[index]
    return node


def _refs(node: object) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


def _in_use() -> Iterator[tuple[str, str, _Switch | None]]:
    """Every (document, schema pointer) checked against, with the switch it is a branch of."""
    for target in (*_REQUESTS.values(), *_RESPONSES.values(), _TOKEN_REQUEST, _TOKEN_RESPONSE):
        yield target.doc, target.pointer, None
        pending = list(target.switches)
        while pending:
            switch = pending.pop()
            for choice in switch.choices:
                yield target.doc, choice.pointer, switch
                pending.extend(choice.switches)
    yield _JWKS.doc, _JWKS.pointer, None


def _branches_match(documents: Mapping[str, object], doc: str, switch: _Switch) -> bool:
    """Whether a switch's choices are its holder's `anyOf` branches, one each, in order
    (a choice names a branch by its place, or by the component a bare `$ref` branch names)."""
    branches = _at(documents[doc], switch.holder).get(_ANY_OF, [])
    return len(branches) == len(switch.choices) and all(
        choice.pointer == f"{switch.holder}/anyOf/{i}"
        or branch == {"$ref": "#" + choice.pointer}
        or branch is _pointed(documents[doc], "#" + choice.pointer)  # the ref, put in place
        for i, (branch, choice) in enumerate(zip(branches, switch.choices, strict=True))
    )


@functools.cache
def load() -> Schemas:
    """The patched schemas and their validators (built once, then shared)."""
    documents = {
        doc: _inlined(_fixed(doc, yaml.safe_load((SPEC_DIR / name).read_text(encoding="utf-8"))))
        for doc, name in FILES.items()
    }
    registry: Registry[Any] = Registry().with_resources(
        (f"urn:dci:{doc}", DRAFT4.create_resource(document)) for doc, document in documents.items()
    )
    resolver = registry.resolver()
    for doc, document in documents.items():  # every ref resolves, once patched
        for ref in set(_refs(document)):
            resolver.lookup(f"urn:dci:{doc}{ref}")
    in_use = list(_in_use())
    switched: set[int] = set()
    for doc, _, switch in in_use:
        if switch is None:
            continue
        if not _branches_match(documents, doc, switch):
            raise ValueError(f"{FILES[doc]}: {switch.holder}: branches not as expected")
        switched.add(id(_at(documents[doc], switch.holder)))
    plain_any_of = Draft4Validator.VALIDATORS[_ANY_OF]

    def any_of(validator: Any, any_of: Any, instance: Any, schema: Any) -> Any:
        # A switch's holder: its anyOf is decided by Schemas._check (the schema objects are
        # the documents' own, which the registry hands out unchanged).
        return () if id(schema) in switched else plain_any_of(validator, any_of, instance, schema)

    validator_class = validators.extend(Draft4Validator, {_ANY_OF: any_of})
    checker = _format_checker()
    return Schemas(
        {
            (doc, pointer): validator_class(
                {"$ref": f"urn:dci:{doc}#{pointer}"}, registry=registry, format_checker=checker
            )
            for doc, pointer, _ in in_use
        }
    )
