"""The LLM client of the data builder, the only code of the project that talks to the network."""
