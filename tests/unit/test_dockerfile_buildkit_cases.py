"""The line parser against buildkit's own parser test files (moby/buildkit,
frontend/dockerfile/parser/testfiles, Apache-2.0): each Dockerfile with the AST dump buildkit
expects, compared node by node with what shoal's parser produces."""

from __future__ import annotations

import pytest

from shoal.build.dockerfile import Node, parse_nodes


def _quote(s: str) -> str:
    """Go's strconv.Quote for the characters these files use."""
    escapes = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\t": "\\t", "\r": "\\r", "\b": "\\b", "\f": "\\f"}
    out = []
    for ch in s:
        if ch in escapes:
            out.append(escapes[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _dump(n: Node) -> str:
    s = n.cmd.lower()
    if n.flags:
        s += " [" + " ".join(_quote(f) for f in n.flags) + "]"
    if n.child is not None:
        return f"{s} ({_dump(n.child)})"
    for a in n.args:
        s += " " + _quote(a)
    return s.strip()


CASES = {
    'escapes': (
        'FROM ubuntu:14.04\nLABEL maintainer Erik \\\\Hollensbe <erik@hollensbe.org>\\"\n\nRUN apt-get \\update && \\\n  apt-get \\"install znc -y\nADD \\conf\\\\" /.znc\n\nRUN foo \\\n\nbar \\\n\nbaz\n\nCMD [ "\\/usr\\\\\\"/bin/znc", "-f", "-r" ]\n',
        '(from "ubuntu:14.04")\n(label "maintainer" "Erik \\\\\\\\Hollensbe <erik@hollensbe.org>\\\\\\"" "")\n(run "apt-get \\\\update &&   apt-get \\\\\\"install znc -y")\n(add "\\\\conf\\\\\\\\\\"" "/.znc")\n(run "foo bar baz")\n(cmd "/usr\\\\\\"/bin/znc" "-f" "-r")\n',
    ),
    'flags': (
        'FROM scratch\nCOPY foo /tmp/\nCOPY --user=me foo /tmp/\nCOPY --doit=true foo /tmp/\nCOPY --user=me --doit=true foo /tmp/\nCOPY --doit=true -- foo /tmp/\nCOPY -- foo /tmp/\nCMD --doit [ "a", "b" ]\nCMD --doit=true -- [ "a", "b" ]\nCMD --doit -- [ ]\n',
        '(from "scratch")\n(copy "foo" "/tmp/")\n(copy ["--user=me"] "foo" "/tmp/")\n(copy ["--doit=true"] "foo" "/tmp/")\n(copy ["--user=me" "--doit=true"] "foo" "/tmp/")\n(copy ["--doit=true"] "foo" "/tmp/")\n(copy "foo" "/tmp/")\n(cmd ["--doit"] "a" "b")\n(cmd ["--doit=true"] "a" "b")\n(cmd ["--doit"])\n',
    ),
    'env': (
        'FROM ubuntu\nENV name value\nENV name=value\nENV name=value name2=value2\nENV name="value value1"\nENV name=value\\ value2\nENV name="value\'quote space\'value2"\nENV name=\'value"double quote"value2\'\nENV name=value\\ value2 name2=value2\\ value3\nENV name="a\\"b"\nENV name="a\\\'b"\nENV name=\'a\\\'b\'\nENV name=\'a\\\'b\'\'\nENV name=\'a\\"b\'\nENV name="\'\'"\n# don\'t put anything after the next line - it must be the last line of the\n# Dockerfile and it must end with \\\nENV name=value \\\n    name1=value1 \\\n    name2="value2a \\\n           value2b" \\\n    name3="value3a\\n\\"value3b\\"" \\\n\tname4="value4a\\\\nvalue4b" \\\n',
        '(from "ubuntu")\n(env "name" "value" "")\n(env "name" "value" "=")\n(env "name" "value" "=" "name2" "value2" "=")\n(env "name" "\\"value value1\\"" "=")\n(env "name" "value\\\\ value2" "=")\n(env "name" "\\"value\'quote space\'value2\\"" "=")\n(env "name" "\'value\\"double quote\\"value2\'" "=")\n(env "name" "value\\\\ value2" "=" "name2" "value2\\\\ value3" "=")\n(env "name" "\\"a\\\\\\"b\\"" "=")\n(env "name" "\\"a\\\\\'b\\"" "=")\n(env "name" "\'a\\\\\'b\'" "=")\n(env "name" "\'a\\\\\'b\'\'" "=")\n(env "name" "\'a\\\\\\"b\'" "=")\n(env "name" "\\"\'\'\\"" "=")\n(env "name" "value" "=" "name1" "value1" "=" "name2" "\\"value2a            value2b\\"" "=" "name3" "\\"value3a\\\\n\\\\\\"value3b\\\\\\"\\"" "=" "name4" "\\"value4a\\\\\\\\nvalue4b\\"" "=")\n',
    ),
    'lk4d4-the-edge-case-generator': (
        'FROM busybox:buildroot-2014.02\n\nLABEL maintainer docker <docker@docker.io>\n\nONBUILD RUN ["echo", "test"]\nONBUILD RUN echo test\nONBUILD COPY . /\n\n\n# RUN Commands \\\n# linebreak in comment \\\nRUN ["ls", "-la"]\nRUN ["echo", "\'1234\'"]\nRUN echo "1234"\nRUN echo 1234\nRUN echo \'1234\' && \\\n    echo "456" && \\\n    echo 789\nRUN    sh -c \'echo root:testpass \\\n        > /tmp/passwd\'\nRUN mkdir -p /test /test2 /test3/test\n\n# ENV \\\nENV SCUBA 1 DUBA 3\nENV SCUBA "1 DUBA 3"\n\n# CMD \\\nCMD ["echo", "test"]\nCMD echo test\nCMD echo "test"\nCMD echo \'test\'\nCMD echo \'test\' | wc -\n\n#EXPOSE\\\nEXPOSE 3000\nEXPOSE 9000 5000 6000\n\nUSER docker\nUSER docker:root\n\nVOLUME ["/test"]\nVOLUME ["/test", "/test2"]\nVOLUME /test3\n\nWORKDIR /test\n\nADD . /\nCOPY . copy\n',
        '(from "busybox:buildroot-2014.02")\n(label "maintainer" "docker <docker@docker.io>" "")\n(onbuild (run "echo" "test"))\n(onbuild (run "echo test"))\n(onbuild (copy "." "/"))\n(run "ls" "-la")\n(run "echo" "\'1234\'")\n(run "echo \\"1234\\"")\n(run "echo 1234")\n(run "echo \'1234\' &&     echo \\"456\\" &&     echo 789")\n(run "sh -c \'echo root:testpass         > /tmp/passwd\'")\n(run "mkdir -p /test /test2 /test3/test")\n(env "SCUBA" "1 DUBA 3" "")\n(env "SCUBA" "\\"1 DUBA 3\\"" "")\n(cmd "echo" "test")\n(cmd "echo test")\n(cmd "echo \\"test\\"")\n(cmd "echo \'test\'")\n(cmd "echo \'test\' | wc -")\n(expose "3000")\n(expose "9000" "5000" "6000")\n(user "docker")\n(user "docker:root")\n(volume "/test")\n(volume "/test" "/test2")\n(volume "/test3")\n(workdir "/test")\n(add "." "/")\n(copy "." "copy")\n',
    ),
    'continueIndent': (
        'FROM ubuntu:14.04\n\nRUN echo hello\\\n  world\\\n  goodnight  \\\n  moon\\\n  light\\\nning\nRUN echo hello  \\\n  world\nRUN echo hello  \\\nworld\nRUN echo hello \\\ngoodbye\\\nfrog\nRUN echo hello  \\  \nworld\nRUN echo hi \\\n \\\n world \\\n\\\n good\\\n\\\nnight\nRUN echo goodbye\\\nfrog\nRUN echo good\\\nbye\\\nfrog\n\nRUN echo hello \\\n# this is a comment\n\n# this is a comment with a blank line surrounding it\n\nthis is some more useful stuff\n',
        '(from "ubuntu:14.04")\n(run "echo hello  world  goodnight    moon  lightning")\n(run "echo hello    world")\n(run "echo hello  world")\n(run "echo hello goodbyefrog")\n(run "echo hello  world")\n(run "echo hi   world  goodnight")\n(run "echo goodbyefrog")\n(run "echo goodbyefrog")\n(run "echo hello this is some more useful stuff")\n',
    ),
    'escape-after-comment': (
        '# Comment here. Should not be looking for the following parser directive.\n# Hence the following line will be ignored, and the subsequent backslash\n# continuation will be the default.\n# escape = `\n\nFROM image\nLABEL maintainer foo@bar.com\nENV GOPATH \\\n\\go',
        '(from "image")\n(label "maintainer" "foo@bar.com" "")\n(env "GOPATH" "\\\\go" "")\n',
    ),
    'health': (
        'FROM debian\nADD check.sh main.sh /app/\nCMD /app/main.sh\nHEALTHCHECK\nHEALTHCHECK --interval=5s --timeout=3s --retries=3 \\\n  CMD /app/check.sh --quiet\nHEALTHCHECK CMD\nHEALTHCHECK   CMD   a b\nHEALTHCHECK --timeout=3s CMD ["foo"]\nHEALTHCHECK CONNECT TCP 7000\nHEALTHCHECK --start-period=0s --start-interval=0s --interval=5s --timeout=0s --retries=0 CMD ["foo"]\n',
        '(from "debian")\n(add "check.sh" "main.sh" "/app/")\n(cmd "/app/main.sh")\n(healthcheck)\n(healthcheck ["--interval=5s" "--timeout=3s" "--retries=3"] "CMD" "/app/check.sh --quiet")\n(healthcheck "CMD")\n(healthcheck "CMD" "a b")\n(healthcheck ["--timeout=3s"] "CMD" "foo")\n(healthcheck "CONNECT" "TCP 7000")\n(healthcheck ["--start-period=0s" "--start-interval=0s" "--interval=5s" "--timeout=0s" "--retries=0"] "CMD" "foo")\n',
    ),
    'kartar-entrypoint-oddities': (
        'FROM ubuntu:14.04\nLABEL maintainer James Turnbull "james@example.com"\nENV REFRESHED_AT 2014-06-01\nRUN apt-get update\nRUN apt-get --no-install-recommends install -y redis-server redis-tools\nEXPOSE 6379\nENTRYPOINT [ "/usr/bin/redis-server" ]\n',
        '(from "ubuntu:14.04")\n(label "maintainer" "James Turnbull \\"james@example.com\\"" "")\n(env "REFRESHED_AT" "2014-06-01" "")\n(run "apt-get update")\n(run "apt-get --no-install-recommends install -y redis-server redis-tools")\n(expose "6379")\n(entrypoint "/usr/bin/redis-server")\n',
    ),
    'trailing-backslash': (
        '# https://github.com/docker/for-win/issues/5254\n\nFROM hello-world\n\nENV A path\nENV B another\\\\path\nENV C trailing\\\\backslash\\\\\nENV D This should not be appended to C\nENV E hello\\\n\\\nworld\nENV F hello\\\n \\\nworld\nENV G hello \\\n\\\nworld\n',
        '(from "hello-world")\n(env "A" "path" "")\n(env "B" "another\\\\\\\\path" "")\n(env "C" "trailing\\\\\\\\backslash\\\\\\\\" "")\n(env "D" "This should not be appended to C" "")\n(env "E" "helloworld" "")\n(env "F" "hello world" "")\n(env "G" "hello world" "")\n',
    ),
    'ADD-COPY-with-JSON': (
        'FROM\tubuntu:14.04\nLABEL\tmaintainer\tSeongyeol Lim <seongyeol37@gmail.com>\n\nCOPY\t.\t/go/src/github.com/docker/docker\nADD\t\t.\t/\nADD\t\tnull /\nCOPY\tnullfile /tmp\nADD\t\t[ "vimrc", "/tmp" ]\nCOPY\t[ "bashrc", "/tmp" ]\nCOPY\t[ "test file", "/tmp" ]\nADD\t\t[ "test file", "/tmp/test file" ]\n',
        '(from "ubuntu:14.04")\n(label "maintainer" "Seongyeol Lim <seongyeol37@gmail.com>" "")\n(copy "." "/go/src/github.com/docker/docker")\n(add "." "/")\n(add "null" "/")\n(copy "nullfile" "/tmp")\n(add "vimrc" "/tmp")\n(copy "bashrc" "/tmp")\n(copy "test file" "/tmp")\n(add "test file" "/tmp/test file")\n',
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_buildkit_testfile(name: str) -> None:
    dockerfile, result = CASES[name]
    nodes, _ = parse_nodes(dockerfile)
    expected = [line for line in result.splitlines() if line.strip()]
    assert [f"({_dump(n)})" for n in nodes] == expected
