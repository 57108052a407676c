"""URLs that try to reach files outside the served folders (shared by the web security tests).

``TOKEN`` is replaced by the organiser token, so each request would otherwise be authorised.
"""

TRAVERSALS = [
    "/static/../../secret.txt",
    "/static/..%2F..%2Fsecret.txt",
    "/static/%2e%2e/%2e%2e/secret.txt",
    "/static/%252e%252e/secret.txt",
    "/static//etc/passwd",
    "//etc/passwd",
    "/static/%2Fetc%2Fpasswd",
    "/api/runs/..%2F..%2Fsecret.txt?token=TOKEN",
    "/api/runs/x/files/..%2Fsecret.txt?token=TOKEN",
    "/api/runs/x/files//etc/passwd?token=TOKEN",
    "/api/latent/..%2Fsecret/image.png?token=TOKEN",
    "/api/studies/..%2Fsecret.txt/results?token=TOKEN",
    "/read/..%2F..%2Fsecret.txt",
    "/api/read/..%2Fx/image/0",
    "/?token=TOKEN&file=../../secret.txt",
    "/static/secret.txt\\..\\x",
]
