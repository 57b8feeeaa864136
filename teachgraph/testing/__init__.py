"""Test fakes for skill authors and other projects: a fake OpenAI-compatible server (fake_openai)
and a scripted LangChain chat model (fake_chat)."""
