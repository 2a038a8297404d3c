from pcmpipe.cli import app

app()
