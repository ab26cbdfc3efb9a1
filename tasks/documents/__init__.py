"""The documents source: procedures, manuals and rules (Markdown, plain text, PDF) chunked along
their numbered sections, seed questions per instruction template with edge cases on purpose,
text grounding (citations and support) and domain validators."""
