async def test_help_lists_commands(bot):
    reply = await bot.push("/help")
    assert "/models" in reply.text and "/ask" in reply.text


async def test_unknown_command_suggests_nearest(bot):
    reply = await bot.push("/modles list")
    assert reply.error and "Did you mean /models?" in reply.text
