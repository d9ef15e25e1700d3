"""`nubis tenant`: tenants and their tokens, for the admin tenant."""

import click

from nubis.cli.output import calls_kernel, emit, table


@click.group()
def tenant():
    """Add, remove and list tenants (admin only)."""


@tenant.command()
@click.argument("name")
@click.option("--token", default="", help="Token to use; default: random.")
@click.option("--admin", is_flag=True)
@click.option("--ports", multiple=True, help="Port range LO-HI it may listen on.")
@click.pass_context
@calls_kernel
def create(ctx, name, token, admin, ports):
    """Add tenant NAME and print its token."""
    token = ctx.obj.client().admin.create_tenant(name, token=token, admin=admin,
                                                 ports=ports)
    emit(ctx, {"tenant": name, "token": token}, token)


@tenant.command("rm")
@click.argument("name")
@click.pass_context
@calls_kernel
def remove(ctx, name):
    """Remove tenant NAME and everything it holds."""
    ctx.obj.client().admin.delete_tenant(name)


@tenant.command("ls")
@click.pass_context
@calls_kernel
def list_tenants(ctx):
    """List tenants."""
    rows = ctx.obj.client().admin.list_tenants()
    emit(ctx, rows, table([[t.name, "yes" if t.admin else "", " ".join(t.ports)]
                           for t in rows], ["TENANT", "ADMIN", "PORTS"]))
