"""Renderers of a Report: terminal (rich), Markdown, HTML. The only report code that prints."""
