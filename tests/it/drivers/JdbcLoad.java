// pgjdbc load through sluice, run by tests/it/drivers.rs with the single-file source launcher:
//   java -cp /usr/share/java/postgresql.jar JdbcLoad.java HOST PORT DB USER PASSWORD MODE THREADS ITERS THRESHOLD TABLE
// MODE "load": THREADS connections, each executing one PreparedStatement ITERS times (pgjdbc
// switches to a named server-side statement after prepareThreshold=THRESHOLD executions), batch
// inserts, a committed and a rolled-back transaction and an error inside a transaction. Prints
// `RESULT rows=N sum=S threads_ok=T server_prepared=P`.
// MODE "whoami": one connection, a PreparedStatement ITERS times; prints `WHOAMI user sum`.
// Every result is checked as it arrives; exits 1 with the failures on stderr.

import java.sql.Connection;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.SQLException;
import java.sql.Statement;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import org.postgresql.PGStatement;

public class JdbcLoad {
    static String url, user, password, table;
    static int iters;
    static final AtomicLong ROWS = new AtomicLong(), SUM = new AtomicLong();
    static final AtomicInteger OK = new AtomicInteger(), SERVER_PREPARED = new AtomicInteger();

    static void check(boolean cond, String what) {
        if (!cond) throw new AssertionError(what);
    }

    static Connection connect() throws SQLException {
        return DriverManager.getConnection(url, user, password);
    }

    public static void main(String[] a) throws Exception {
        url = "jdbc:postgresql://" + a[0] + ":" + a[1] + "/" + a[2] + "?sslmode=disable"
                + "&connectTimeout=10&socketTimeout=120&prepareThreshold=" + a[8];
        user = a[3];
        password = a[4];
        String mode = a[5];
        int threads = Integer.parseInt(a[6]);
        iters = Integer.parseInt(a[7]);
        table = a[9];
        if (mode.equals("whoami")) {
            whoami();
            return;
        }
        try (Connection c = connect(); Statement s = c.createStatement()) {
            s.execute("drop table if exists " + table);
            s.execute("create table " + table + " (thread int not null, seq int not null,"
                    + " val int not null, primary key (thread, seq))");
        }
        List<Thread> pool = new ArrayList<>();
        List<String> failures = java.util.Collections.synchronizedList(new ArrayList<>());
        for (int t = 0; t < threads; t++) {
            final int tid = t;
            Thread th = new Thread(() -> {
                try {
                    work(tid);
                    OK.incrementAndGet();
                } catch (Throwable e) {
                    java.io.StringWriter sw = new java.io.StringWriter();
                    e.printStackTrace(new java.io.PrintWriter(sw));
                    failures.add("thread " + tid + ": " + sw);
                }
            });
            th.start();
            pool.add(th);
        }
        for (Thread th : pool) th.join();
        for (String f : failures) System.err.println(f);
        System.out.println("RESULT rows=" + ROWS + " sum=" + SUM + " threads_ok=" + OK
                + " server_prepared=" + SERVER_PREPARED);
        System.exit(failures.isEmpty() ? 0 : 1);
    }

    static void whoami() throws SQLException {
        long sum = 0;
        String seen = null;
        try (Connection c = connect();
             PreparedStatement ps = c.prepareStatement("select current_user::text, ?::int + 1")) {
            for (int i = 0; i < iters; i++) {
                ps.setInt(1, i);
                try (ResultSet rs = ps.executeQuery()) {
                    check(rs.next(), "a row");
                    check(seen == null || seen.equals(rs.getString(1)), "user changed");
                    seen = rs.getString(1);
                    check(rs.getInt(2) == i + 1, "value " + rs.getInt(2));
                    sum += rs.getInt(2);
                }
            }
        }
        System.out.println("WHOAMI " + seen + " " + sum);
    }

    static long count(Connection c, int tid, String what) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "select count(*), coalesce(sum(val), 0) from " + table + " where thread = ?")) {
            ps.setInt(1, tid);
            try (ResultSet rs = ps.executeQuery()) {
                rs.next();
                return what.equals("rows") ? rs.getLong(1) : rs.getLong(2);
            }
        }
    }

    static void work(int tid) throws Exception {
        long rows = 0, sum = 0;
        int seq = 0;
        try (Connection c = connect()) {
            // One PreparedStatement executed many times: unnamed at first, then named (S_n).
            try (PreparedStatement ps = c.prepareStatement(
                    "select ?::int * 3, current_user::text, ?::text")) {
                for (int i = 0; i < iters; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "t" + tid);
                    try (ResultSet rs = ps.executeQuery()) {
                        check(rs.next(), "a row");
                        check(rs.getInt(1) == i * 3, "got " + rs.getInt(1) + " for " + i);
                        check(rs.getString(2).equals(user), "current_user " + rs.getString(2));
                        check(rs.getString(3).equals("t" + tid), "echo " + rs.getString(3));
                    }
                }
                if (ps.unwrap(PGStatement.class).isUseServerPrepare()) SERVER_PREPARED.incrementAndGet();
            }
            try (PreparedStatement ins = c.prepareStatement(
                    "insert into " + table + " (thread, seq, val) values (?, ?, ?)")) {
                for (int b = 0; b < 3; b++) { // batches in autocommit
                    for (int k = 0; k < 20; k++) {
                        seq++;
                        ins.setInt(1, tid);
                        ins.setInt(2, seq);
                        ins.setInt(3, seq * 10 + tid);
                        ins.addBatch();
                        rows++;
                        sum += seq * 10 + tid;
                    }
                    int[] counts = ins.executeBatch();
                    check(counts.length == 20, "batch size " + counts.length);
                    for (int n : counts) check(n == 1 || n == Statement.SUCCESS_NO_INFO, "count " + n);
                }
                check(count(c, tid, "rows") == rows, "rows after batches");

                c.setAutoCommit(false); // committed: 5 inserts and an update
                for (int k = 0; k < 5; k++) {
                    seq++;
                    ins.setInt(1, tid);
                    ins.setInt(2, seq);
                    ins.setInt(3, 1);
                    check(ins.executeUpdate() == 1, "insert in transaction");
                }
                try (PreparedStatement up = c.prepareStatement(
                        "update " + table + " set val = val + 1 where thread = ? and val = 1")) {
                    up.setInt(1, tid);
                    check(up.executeUpdate() == 5, "update count");
                }
                check(count(c, tid, "rows") == rows + 5, "reads own writes");
                c.commit();
                rows += 5;
                sum += 10;

                for (int k = 0; k < 5; k++) { // rolled back
                    ins.setInt(1, tid);
                    ins.setInt(2, seq + 1 + k);
                    ins.setInt(3, 1000);
                    ins.addBatch();
                }
                ins.executeBatch();
                c.rollback();

                try (Statement s = c.createStatement()) { // error inside a transaction
                    s.executeQuery("select 1 / 0");
                    throw new AssertionError("division by zero did not fail");
                } catch (SQLException e) {
                    check("22012".equals(e.getSQLState()), "sqlstate " + e.getSQLState());
                }
                c.rollback();
                c.setAutoCommit(true);
            }
            check(count(c, tid, "rows") == rows, "rows at end");
            check(count(c, tid, "sum") == sum, "sum at end");
        }
        ROWS.addAndGet(rows);
        SUM.addAndGet(sum);
    }
}
