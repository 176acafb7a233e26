"""The command parser and the router: pure parsing, errors as one-line replies."""

import pytest

from bot.commands import CommandSpec, Opt, parse
from bot.errors import CommandError

SPECS = {
    "models": CommandSpec("models", subcommands={"list": "", "use": "", "info": ""},
                          options={"ctx": Opt(int, min=128, max=1_000_000)}),
    "train": CommandSpec("train", options={"epochs": Opt(int, min=1, max=100), "base": Opt(choices=("smollm2", "tiny")),
                                           "data": Opt(), "fp16": Opt(bool)}),
    "ask": CommandSpec("ask", free_text=True, options={"template": Opt(choices=("cot", "json"))}),
}


def test_subcommand_args_and_typed_options():
    cmd = parse("/models use llama3.1:8b ctx=4096", SPECS)
    assert (cmd.name, cmd.args, cmd.options) == ("models", ("use", "llama3.1:8b"), {"ctx": 4096})


def test_quoted_values_and_flags():
    cmd = parse('/train base=smollm2 data="#support channel" --fp16 epochs=2', SPECS)
    assert cmd.options == {"base": "smollm2", "data": "#support channel", "fp16": True, "epochs": 2}


def test_smart_quotes_from_slack_are_understood():
    assert parse("/train data=“a b”", SPECS).options["data"] == "a b"


@pytest.mark.parametrize("text,expected", [
    ("/modles list", "Did you mean /models?"),
    ("/zzzz", "Unknown command /zzzz."),
    ("/models lst", "Did you mean 'list'?"),
    ("/models", "needs a subcommand: list, use, info"),
    ("/train epochs=zero", "'zero' is not a valid int"),
    ("/train epochs=1000", "outside 1..100"),
    ("/train base=gpt5", "Allowed: smollm2, tiny"),
    ("/train lr=3", "Unknown option 'lr' for /train. Allowed options: base, data, epochs, fp16"),
    ('/train data="unclosed', "Close the quote"),
    ("/", "Empty command"),
])
def test_errors_say_what_was_wrong(text, expected):
    with pytest.raises(CommandError) as err:
        parse(text, SPECS)
    assert expected in str(err.value)
    assert "\n" not in str(err.value)


def test_free_text_keeps_unknown_key_values_and_apostrophes():
    cmd = parse("/ask what's x=3 in base 2? template=cot", SPECS)
    assert cmd.options == {"template": "cot"}
    assert cmd.rest == "what's x=3 in base 2?"


def test_duplicate_command_registration_fails_loudly():
    import handlers
    from bot.router import command

    handlers.load_all()
    with pytest.raises(RuntimeError, match="registered twice"):
        @command("help", help="again")
        async def again(msg, ctx):  # pragma: no cover
            pass


async def test_router_turns_errors_into_one_line_replies(bot):
    reply = await bot.push("/models frobnicate")
    assert reply.error and reply.ephemeral and "Unknown subcommand 'frobnicate'" in reply.text


async def test_internal_error_gives_a_reference_not_a_traceback(bot, monkeypatch):
    from bot import router

    async def boom(msg, ctx):
        raise RuntimeError("secret internals")

    entry = bot.router.table["explain"]
    monkeypatch.setitem(bot.router.table, "explain", router.Registered(entry.spec, boom))
    reply = await bot.push("/explain lora")
    assert reply.error and "Something went wrong on my side (ref " in reply.text
    assert "secret internals" not in reply.text


async def test_empty_message_is_answered(bot):
    reply = await bot.push("   ")
    assert reply.error and "empty" in reply.text.lower()


async def test_help_for_one_command_shows_options(bot):
    reply = await bot.push("/help models")
    assert "ctx=" in reply.text and "info" in reply.text
