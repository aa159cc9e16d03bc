"""Request bodies as linupdate 3.17.1 sent them (linupdate-captured-requests.md), lists cut short."""
from __future__ import annotations

import json

REGISTER = {"ip": "127.0.0.1", "hostname": "localhost"}

STATUS = {
    "hostname": "localhost",
    "os_family": "Debian",
    "os": "Debian GNU/Linux",
    "os_version": "12",
    "type": "kvm docker ",
    "kernel": "6.18.44-fc-v657",
    "arch": "x86_64",
    "cpu": "AMD EPYC (2 cores)",
    "ram": "23.54 GB",
    "network": {
        "lo": {"ipv4": "127.0.0.1", "ipv6": "::1", "mac": "00:00:00:00:00:00"},
        "eth0": {"ipv4": "192.0.2.2", "ipv6": "fe80::fc:ff:fe00:1%eth0", "mac": "02:fc:00:00:00:01"},
        "ifb0": {"ipv4": None, "ipv6": None, "mac": "6a:e6:00:5b:1c:c1"},
    },
    "profile": "acceptance",
    "env": "prod",
    "agent_status": "stopped",
    "agent_version": "3.17.1",
    "reboot_required": "false",
    "uptime": 1795683892.0,
}

EVENTS = {
    "events": [
        {
            "date_start": "2025-06-24", "time_start": "14:36:25", "date_end": "2025-06-24", "time_end": "14:36:25",
            "command": "apt-get -qqy upgrade",
            "upgraded": [
                {"name": "libsystemd0", "version": "252.38-1~deb12u1"},
                {"name": "libudev1", "version": "252.38-1~deb12u1"},
            ],
        },
        {
            "date_start": "2025-06-24", "time_start": "14:36:29", "date_end": "2025-06-24", "time_end": "14:37:04",
            "command": "apt-get install -qqy curl python3-dev python3-crcmod apt-transport-https lsb-release "
            "openssh-client git make gnupg",
            "installed": [
                {"name": "lsb-release", "version": "12.0-1"},
                {"name": "libssh2-1", "version": "1.10.0-3+b1"},
            ],
        },
    ]
}

AVAILABLE = {
    "available_packages": [
        {"name": "appstream", "version": "0.16.1-2+b1", "repository": "http://deb.debian.org/debian", "security": False},
        {"name": "base-files", "version": "12.4+deb12u15", "repository": "http://deb.debian.org/debian", "security": False},
        {"name": "ca-certificates", "version": "20250419~deb12u2", "repository": "http://deb.debian.org/debian-security",
         "security": True},
    ]
}

INSTALLED = {
    "installed_packages": [
        {"name": "adduser", "version": "3.134"},
        {"name": "adwaita-icon-theme", "version": "43-1"},
        {"name": "appstream", "version": "0.16.1-2"},
        {"name": "base-files", "version": "12.4+deb12u11"},
        {"name": "ca-certificates", "version": "20230311"},
        {"name": "libc6:i386", "version": "2.36-9+deb12u10"},
        {"name": "libc6", "version": "2.36-9+deb12u10"},
        {"name": "libstdc++6", "version": "12.2.0-14"},
        {"name": "php8.2-fpm", "version": "8.2.28-1~deb12u1"},
    ]
}

PROFILE = {
    "name": "acceptance",
    "Package_exclude": "linux-image.*,kernel.*",
    "Package_exclude_major": "nginx",
    "Service_reload": "",
    "Service_restart": "cron",
}


def agent_body(obj) -> bytes:
    """Bodies as python-requests sends them: json.dumps output, no Content-Type."""
    return json.dumps(obj).encode()
